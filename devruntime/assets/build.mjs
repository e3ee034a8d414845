// Builds the desk/website bundles of the runtime's apps (the framework first) with esbuild, laid out as
// a bench's sites/assets: <out>/<app>/dist/{js,css,css-rtl}/NAME.bundle.HASH.{js,css},
// <out>/assets.json and <out>/assets-rtl.json ("desk.bundle.js" -> "/assets/monoframe/dist/js/...").
//
//   node build.mjs --node-modules DIR --out DIR [--dev] --app NAME=PUBLIC_DIR [--app ...]
//
// The framework's sources are Frappe's renamed to monoframe, not all of them consistently: imports and
// asset references say "monoframe" where the shipped files (js/frappe/, frappe_datatable.scss,
// images/frappe-*.svg) and the npm packages (frappe-charts, frappe-datatable, ...) kept "frappe", and
// the .vue files still use the `frappe` global. Each place where this build bridges that is marked
// "rename:". Skips the build when its inputs (this script, the npm lockfile, the public files of the
// apps that have bundles) are those of the last successful build.
import { createHash } from "node:crypto";
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const args = parse_args(process.argv.slice(2));
const require = createRequire(path.join(args.node_modules, "..", "package.json"));
const esbuild = require("esbuild");
const sass = require("sass");
const sfc = require("@vue/compiler-sfc");
const rtlcss = require("rtlcss");
const postcss = require("postcss");

const PRODUCTION = !args.dev;
// rename: the framework's global is `monoframe`; apps (and the framework's .vue files) use Frappe's
// `frappe`. As `import frappe` is monoframe in Python, `frappe` is the same object in the browser.
const FRAPPE_GLOBAL = `if (!("frappe" in window)) Object.defineProperty(window, "frappe", {
	get: () => window.monoframe,
	set: (value) => { window.monoframe = value; },
	configurable: true,
});`;
const STYLE_EXT = new Set([".scss", ".sass", ".css"]);
const SCRIPT_EXT = new Set([".js", ".ts"]);
// files that CSS references by url(): copied next to the bundle
const FILE_LOADERS = Object.fromEntries(
	["woff", "woff2", "ttf", "eot", "otf", "svg", "png", "jpg", "jpeg", "gif", "webp", "cur"].map(
		(ext) => [`.${ext}`, "file"]
	)
);

main().catch((error) => {
	console.error(error);
	process.exit(1);
});

async function main() {
	const stamp_file = path.join(args.out, ".build-stamp");
	const stamp = inputs_hash();
	if (!args.force && read(stamp_file) === stamp) {
		return;
	}
	const started = Date.now();
	fs.rmSync(args.out, { recursive: true, force: true });
	fs.mkdirSync(args.out, { recursive: true });

	const assets = {};
	const assets_rtl = {};
	for (const [app, public_dir] of args.apps) {
		const entries = find_bundles(public_dir);
		const scripts = entries.filter((f) => SCRIPT_EXT.has(path.extname(f)));
		const styles = entries.filter((f) => STYLE_EXT.has(path.extname(f)));
		const [script_out, style_out] = await Promise.all([
			build_scripts(app, scripts),
			build_styles(app, styles),
		]);
		Object.assign(assets, script_out, style_out.assets);
		Object.assign(assets_rtl, style_out.assets_rtl);
		console.log(`devruntime assets: ${app}: ${scripts.length} script and ${styles.length} style bundles`);
	}
	fs.writeFileSync(path.join(args.out, "assets.json"), JSON.stringify(assets, null, 1));
	fs.writeFileSync(path.join(args.out, "assets-rtl.json"), JSON.stringify(assets_rtl, null, 1));
	fs.writeFileSync(stamp_file, stamp);
	console.log(`devruntime assets: built in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

function parse_args(argv) {
	const parsed = { apps: [], dev: false, force: false };
	for (let i = 0; i < argv.length; i++) {
		const arg = argv[i];
		if (arg === "--dev") parsed.dev = true;
		else if (arg === "--force") parsed.force = true;
		else if (arg === "--node-modules") parsed.node_modules = path.resolve(argv[++i]);
		else if (arg === "--out") parsed.out = path.resolve(argv[++i]);
		else if (arg === "--app") {
			const value = argv[++i];
			const [name, dir] = [value.slice(0, value.indexOf("=")), value.slice(value.indexOf("=") + 1)];
			// an app without a public/ folder has nothing to build
			if (fs.existsSync(dir)) parsed.apps.push([name, path.resolve(dir)]);
		} else throw new Error(`unknown argument ${arg}`);
	}
	if (!parsed.node_modules || !parsed.out || !parsed.apps.length) {
		throw new Error("usage: build.mjs --node-modules DIR --out DIR --app NAME=PUBLIC_DIR ...");
	}
	return parsed;
}

function read(file) {
	try {
		return fs.readFileSync(file, "utf-8");
	} catch {
		return null;
	}
}

function* walk(dir) {
	for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
		if (entry.name === "node_modules" || entry.name === "dist") continue;
		const full = path.join(dir, entry.name);
		if (entry.isDirectory()) yield* walk(full);
		else if (entry.isFile()) yield full;
	}
}

function inputs_hash() {
	const hash = createHash("sha256");
	hash.update(fs.readFileSync(fileURLToPath(import.meta.url)));
	hash.update(read(path.join(args.node_modules, ".package-lock.json")) || "");
	hash.update(JSON.stringify({ production: PRODUCTION }));
	for (const [app, dir] of args.apps) {
		hash.update(`\0app ${app} ${dir}\0`);
		// an app without bundles (only files served as they are) has nothing to build
		if (!find_bundles(dir).length) continue;
		for (const file of [...walk(dir)].sort()) {
			hash.update(`${path.relative(dir, file)}\0`);
			hash.update(fs.readFileSync(file));
		}
	}
	return hash.digest("hex");
}

function find_bundles(public_dir) {
	return [...walk(public_dir)]
		.filter((f) => /\.bundle\.(js|ts|scss|sass|css)$/.test(f))
		.sort();
}

// the folder that holds each app's package (so "monoframe/public/..." resolves), and node_modules
function module_dirs() {
	const app_roots = args.apps.map(([, dir]) => path.dirname(path.dirname(dir)));
	return [args.node_modules, ...new Set(app_roots)];
}

function output_key(file) {
	const ext = path.extname(file);
	return STYLE_EXT.has(ext) ? path.basename(file, ext) + ".css" : path.basename(file);
}

function assets_map(metafile, entry_by_out) {
	const out = {};
	for (const [output, info] of Object.entries(metafile.outputs)) {
		if (!info.entryPoint) continue;
		const rel = path.relative(args.out, path.resolve(output));
		const key = entry_by_out(rel, info.entryPoint);
		out[key] = `/assets/${rel.split(path.sep).join("/")}`;
		// rename: templates include "monoframe-web.bundle.js", the entry point is frappe-web.bundle.js
		if (key.includes("frappe")) out[renamed_back(key)] = out[key];
	}
	return out;
}

async function build_scripts(app, files) {
	if (!files.length) return {};
	const entry_points = {};
	for (const file of files) {
		entry_points[`${app}/dist/js/${path.basename(file, path.extname(file))}`] = file;
	}
	const result = await esbuild.build({
		...common_options(),
		entryPoints: entry_points,
		banner: { js: FRAPPE_GLOBAL },
		plugins: [renamed_paths_plugin(), html_plugin(), vue_plugin(), css_in_js_plugin()],
		define: {
			"process.env.NODE_ENV": JSON.stringify(PRODUCTION ? "production" : "development"),
			__VUE_OPTIONS_API__: "true",
			__VUE_PROD_DEVTOOLS__: "false",
			__VUE_PROD_HYDRATION_MISMATCH_DETAILS__: "false",
		},
	});
	return assets_map(result.metafile, (_, entry) => output_key(entry));
}

async function build_styles(app, files) {
	if (!files.length) return { assets: {}, assets_rtl: {} };
	const entry_points = {};
	for (const file of files) {
		entry_points[`${app}/dist/css/${path.basename(file, path.extname(file))}`] = file;
	}
	const result = await esbuild.build({
		...common_options(),
		entryPoints: entry_points,
		loader: FILE_LOADERS,
		assetNames: `${app}/dist/css/files/[name].[hash]`,
		plugins: [assets_external_plugin(), renamed_paths_plugin(), sass_plugin()],
	});
	const assets = assets_map(result.metafile, (_, entry) => output_key(entry));
	// right-to-left variants (Arabic, Hebrew, ...), as Frappe's build writes them
	const assets_rtl = {};
	for (const [key, url] of Object.entries(assets)) {
		const rel = url.replace(/^\/assets\//, "");
		const rtl_rel = rel.replace("/dist/css/", "/dist/css-rtl/");
		const css = fs.readFileSync(path.join(args.out, rel), "utf-8");
		fs.mkdirSync(path.dirname(path.join(args.out, rtl_rel)), { recursive: true });
		// url()s are relative to dist/css/; css-rtl/ is its sibling
		const rtl = rtlcss.process(css).replace(/url\((["']?)files\//g, "url($1../css/files/");
		fs.writeFileSync(path.join(args.out, rtl_rel), rtl);
		assets_rtl[`rtl_${key}`] = `/assets/${rtl_rel}`;
	}
	return { assets, assets_rtl };
}

function common_options() {
	return {
		entryNames: "[dir]/[name].[hash]",
		outdir: args.out,
		bundle: true,
		metafile: true,
		minify: PRODUCTION,
		sourcemap: PRODUCTION ? false : "linked",
		target: ["es2017", "chrome87", "firefox78", "safari14"],
		nodePaths: module_dirs(),
		logLevel: "warning",
		logOverride: { "unsupported-css-nesting": "silent" },
	};
}

// rename: specifiers that name "monoframe" where the shipped file or npm package kept "frappe"
function renamed(specifier) {
	return specifier.replace(/monoframe/g, "frappe");
}

function renamed_back(name) {
	return name.replace(/frappe/g, "monoframe");
}

function exists_as_module(file) {
	const candidates = ["", ".js", ".ts", ".vue", ".json", "/index.js"];
	return candidates.some((suffix) => fs.existsSync(file + suffix) && fs.statSync(file + suffix).isFile());
}

function renamed_paths_plugin() {
	return {
		name: "devruntime-renamed-paths",
		setup(build) {
			const retry = (specifier, args) =>
				build.resolve(specifier, {
					kind: args.kind,
					resolveDir: args.resolveDir,
					importer: args.importer,
					pluginData: { renamed: true },
				});
			// "./monoframe/ui/page.js" in public/js/, whose folder is public/js/frappe/
			build.onResolve({ filter: /^\.\.?\/.*monoframe/ }, (args) => {
				if (args.pluginData?.renamed) return undefined;
				if (exists_as_module(path.resolve(args.resolveDir, args.path))) return undefined;
				return retry(renamed(args.path), args);
			});
			// "monoframe-charts/dist/monoframe-charts.esm": the npm package is frappe-charts
			build.onResolve({ filter: /^monoframe-/ }, (args) => {
				if (args.pluginData?.renamed) return undefined;
				return retry(renamed(args.path), args);
			});
			// "monoframe/public/node_modules/x": bench links the app's public/node_modules to its node_modules
			build.onResolve({ filter: /^monoframe\/public\/node_modules\// }, (args) =>
				retry(args.path.replace(/^monoframe\/public\/node_modules\//, ""), args)
			);
		},
	};
}

// "/assets/..." in stylesheets is served as is
function assets_external_plugin() {
	return {
		name: "devruntime-assets-external",
		setup(build) {
			build.onResolve({ filter: /^\/assets\// }, (args) => ({ path: args.path, external: true }));
			// images and fonts a stylesheet names but the package does not ship (a 404 then, as upstream)
			build.onResolve({ filter: /^[^/]/ }, (args) => {
				if (args.kind !== "url-token" || args.pluginData?.checked) return undefined;
				const file = path.resolve(args.resolveDir, args.path.replace(/[?#].*$/, ""));
				if (/^(data|https?):/.test(args.path) || fs.existsSync(file)) return undefined;
				console.warn(`devruntime assets: ${args.importer}: url(${args.path}) not found`);
				return { path: args.path, external: true };
			});
		},
	};
}

// .html imported from JS is a client-side template: monoframe.templates["name"] = "..."
function html_plugin() {
	return {
		name: "devruntime-html-templates",
		setup(build) {
			build.onLoad({ filter: /\.html$/ }, async (args) => {
				const name = path.basename(args.path).split(".")[0];
				const content = await fs.promises.readFile(args.path, "utf-8");
				return {
					contents: `monoframe.templates[${JSON.stringify(name)}] = ${JSON.stringify(content)};\n`,
					loader: "js",
				};
			});
		},
	};
}

function inject_css_module(css) {
	// as Frappe's build does for the styles of its Vue bundles: added to the page with the script
	return `monoframe.dom.set_style(${JSON.stringify(css)});\n`;
}

// a stylesheet imported from JS (not a style bundle) is injected into the page by the script
function css_in_js_plugin() {
	return {
		name: "devruntime-css-in-js",
		setup(build) {
			build.onLoad({ filter: /\.css$/ }, async (args) => ({
				contents: inject_css_module(await fs.promises.readFile(args.path, "utf-8")),
				loader: "js",
			}));
		},
	};
}

// rename: the framework's .vue files still use Frappe's names (the `frappe` global, X-Frappe-* headers,
// frappe-control classes, /assets/frappe/...), which the rest of the renamed framework spells monoframe
function rename_vue_source(source) {
	return source.replace(/\bfrappe\b/g, "monoframe").replace(/\bFrappe\b/g, "Monoframe");
}

function vue_plugin() {
	return {
		name: "devruntime-vue",
		setup(build) {
			build.onLoad({ filter: /\.vue$/ }, async (args) => {
				const source = rename_vue_source(await fs.promises.readFile(args.path, "utf-8"));
				const { descriptor, errors } = sfc.parse(source, { filename: args.path });
				if (errors.length) {
					return { errors: errors.map((e) => ({ text: String(e.message || e) })) };
				}
				const id = createHash("sha256").update(args.path).digest("hex").slice(0, 8);
				const scoped = descriptor.styles.some((style) => style.scoped);
				const is_ts = [descriptor.script, descriptor.scriptSetup].some((s) => s?.lang === "ts");
				let code = "";
				let bindings;
				if (descriptor.script || descriptor.scriptSetup) {
					const script = sfc.compileScript(descriptor, {
						id,
						inlineTemplate: PRODUCTION,
						genDefaultAs: "__sfc__",
						isProd: PRODUCTION,
					});
					bindings = script.bindings;
					code += `${script.content}\n`;
				} else {
					code += "const __sfc__ = {};\n";
				}
				if (descriptor.template && !(descriptor.scriptSetup && PRODUCTION)) {
					const template = sfc.compileTemplate({
						source: descriptor.template.content,
						filename: args.path,
						id,
						scoped,
						isProd: PRODUCTION,
						compilerOptions: { bindingMetadata: bindings, isTS: is_ts },
					});
					if (template.errors.length) {
						return { errors: template.errors.map((e) => ({ text: String(e.message || e) })) };
					}
					code += `\n${template.code.replace(/\nexport function render/, "\nfunction render")}\n`;
					code += "__sfc__.render = render;\n";
				}
				if (scoped) code += `__sfc__.__scopeId = "data-v-${id}";\n`;
				for (const style of descriptor.styles) {
					let css = style.content;
					if (style.lang === "scss" || style.lang === "sass") {
						css = sass.compileString(css, {
							...sass_options(),
							syntax: style.lang === "sass" ? "indented" : "scss",
							url: pathToFileURL(args.path),
						}).css;
					}
					css = inline_css_imports(css, path.dirname(args.path));
					const compiled = sfc.compileStyle({
						source: css,
						filename: args.path,
						id: `data-v-${id}`,
						scoped: style.scoped,
						isProd: PRODUCTION,
					});
					code += inject_css_module(compiled.code);
				}
				code += "export default __sfc__;\n";
				return { contents: code, loader: is_ts ? "ts" : "js", resolveDir: path.dirname(args.path) };
			});
		},
	};
}

// `@import "pkg/file.css"` left by Sass (it never inlines .css) is inlined from node_modules
function inline_css_imports(css, from_dir) {
	return css.replace(/@import\s+(?:url\()?["']([^"']+\.css)["']\)?\s*;/g, (match, specifier) => {
		for (const base of [from_dir, args.node_modules]) {
			const file = path.resolve(base, specifier);
			if (fs.existsSync(file)) return fs.readFileSync(file, "utf-8");
		}
		throw new Error(`cannot inline @import "${specifier}" (from ${from_dir})`);
	});
}

function sass_target(base) {
	const dir = path.dirname(base);
	const name = path.basename(base);
	const candidates = [base];
	for (const prefix of ["", "_"]) {
		for (const ext of [".scss", ".sass", ".css"]) candidates.push(path.join(dir, prefix + name + ext));
	}
	for (const index of ["_index.scss", "index.scss"]) candidates.push(path.join(base, index));
	return candidates.find((file) => fs.existsSync(file) && fs.statSync(file).isFile());
}

function sass_options() {
	const load_paths = module_dirs();
	const importer = {
		// "~pkg/x": webpack-style node_modules import
		findFileUrl(url, context) {
			const bases = [];
			let specifier = url;
			if (url.startsWith("~")) {
				specifier = url.slice(1);
				bases.push(args.node_modules);
			} else {
				if (context?.containingUrl?.protocol === "file:") {
					bases.push(path.dirname(fileURLToPath(context.containingUrl)));
				}
				bases.push(...load_paths);
			}
			for (const candidate of [specifier, renamed(specifier)]) {
				for (const base of bases) {
					const found = sass_target(path.resolve(base, candidate));
					if (found) return pathToFileURL(found);
				}
			}
			return null;
		},
	};
	return {
		loadPaths: load_paths,
		importers: [importer],
		quietDeps: true,
		silenceDeprecations: ["import", "global-builtin", "color-functions", "mixed-decls", "slash-div"].filter(
			(id) => sass.deprecations?.[id]
		),
		logger: sass.Logger?.silent,
	};
}

function sass_plugin() {
	return {
		name: "devruntime-sass",
		setup(build) {
			build.onLoad({ filter: /\.(scss|sass)$/ }, async (args) => {
				const result = await sass.compileAsync(args.path, sass_options());
				const css = await postcss([frappe_class_aliases]).process(result.css, { from: args.path });
				return {
					contents: css.css,
					loader: "css",
					resolveDir: path.dirname(args.path),
					watchFiles: result.loadedUrls.filter((u) => u.protocol === "file:").map(fileURLToPath),
				};
			});
		},
	};
}

// rename: the stylesheets style .monoframe-chart, .monoframe-card, .monoframe-control, ...; frappe-charts
// (from npm) and apps' markup carry Frappe's .frappe-* classes: each such rule also styles those
const frappe_class_aliases = {
	postcssPlugin: "devruntime-frappe-class-aliases",
	Rule(rule) {
		if (!rule.selector.includes(".monoframe-") || rule.__aliased) return;
		rule.__aliased = true;
		const aliases = rule.selectors
			.filter((selector) => selector.includes(".monoframe-"))
			.map((selector) => selector.replace(/\.monoframe-/g, ".frappe-"));
		rule.selectors = [...rule.selectors, ...aliases];
	},
};
