#!/usr/bin/env bash
# Idempotent set-up of the dev/CI runtime: Debian packages, a Python 3.12 virtualenv with the pinned
# runtime, the app (editable) and the test dependencies, the `frappe` alias (.pth file), and the desk's
# JS/CSS bundles built from the framework's sources (devruntime/assets).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
work=${DEVRUNTIME_WORK:-$repo/.devruntime}
venv=$work/venv
mkdir -p "$work"

need=()
command -v redis-server >/dev/null || need+=(redis-server)
[ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
command -v mariadb >/dev/null || need+=(mariadb-client)
# PostgreSQL (any Debian major version; the runtime finds its binaries) and pg_stat_statements
dpkg -s postgresql >/dev/null 2>&1 || need+=(postgresql)
dpkg -s postgresql-contrib >/dev/null 2>&1 || need+=(postgresql-contrib)
dpkg -s libmariadb-dev >/dev/null 2>&1 || need+=(libmariadb-dev)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v wrk >/dev/null || need+=(wrk)
command -v npm >/dev/null || need+=(nodejs npm)
# the browser of the desk tests (driven by Playwright, which downloads no browser of its own here)
[ -x "${VPERF_CHROMIUM:-/usr/bin/chromium}" ] || need+=(chromium)
# a real Prometheus (and promtool) scrapes the app's exposition in the export tests
[ -x /usr/bin/prometheus ] || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
	echo "devruntime: installing Debian packages: ${need[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

python=""
for candidate in ${DEVRUNTIME_PYTHON:-} ${PYENV_ROOT:-/root/.pyenv}/versions/3.12*/bin/python3.12 \
	/usr/local/bin/python3.12 /usr/bin/python3.12 python3.12; do
	# a pyenv shim may exist and still refuse to run, so each candidate must actually start
	if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; then
		python=$candidate
		break
	fi
done
[ -n "$python" ] || { echo "devruntime: no working Python 3.12 found (set DEVRUNTIME_PYTHON)" >&2; exit 1; }

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"

stamp=$work/.installed
want=$(cat "$here/requirements.txt" "$repo/pyproject.toml" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
	echo "devruntime: installing the runtime and the app into $venv"
	"$venv/bin/pip" install -q -r "$here/requirements.txt"
	"$venv/bin/pip" install -q -e "$repo[test,bench,otlp]"
	echo "$want" > "$stamp"
fi

# `import frappe` resolves to the runtime, with its fixes, in every process of this venv
site_packages=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
printf '%s\nimport vperf_devruntime.boot\n' "$here" > "$site_packages/vperf_devruntime.pth"

# the desk's bundles: npm packages pinned in devruntime/assets, built into <work>/sites/assets as a
# bench's sites/assets (build.mjs skips the build when its inputs are those of the last build)
npm_dir=$work/npm
want=$(cat "$here/assets/package.json" "$here/assets/package-lock.json" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$npm_dir/.installed" 2>/dev/null)" != "$want" ]; then
	echo "devruntime: installing the npm packages of the desk bundles into $npm_dir"
	mkdir -p "$npm_dir"
	cp "$here/assets/package.json" "$here/assets/package-lock.json" "$npm_dir/"
	(cd "$npm_dir" && npm ci --no-audit --no-fund --loglevel=error)
	echo "$want" > "$npm_dir/.installed"
fi
framework=$("$venv/bin/python" -c "import importlib.util; print(importlib.util.find_spec('monoframe').submodule_search_locations[0])")
assets=$work/sites/assets
node "$here/assets/build.mjs" --node-modules "$npm_dir/node_modules" --out "$assets" \
	--app "monoframe=$framework/public" --app "verenigingen_perf=$repo/verenigingen_perf/public"
# files the desk loads at run time from /assets/monoframe/node_modules (bench links it the same way)
ln -sfn "$npm_dir/node_modules" "$assets/monoframe/node_modules"
