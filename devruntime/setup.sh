#!/usr/bin/env bash
# Idempotent set-up of the dev/CI runtime: Debian packages, a Python 3.12 virtualenv with the pinned
# runtime, the app (editable) and the test dependencies, and the `frappe` alias (.pth file).
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
dpkg -s libmariadb-dev >/dev/null 2>&1 || need+=(libmariadb-dev)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v wrk >/dev/null || need+=(wrk)
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
	"$venv/bin/pip" install -q -e "$repo[test,bench]"
	echo "$want" > "$stamp"
fi

# `import frappe` resolves to the runtime, with its fixes, in every process of this venv
site_packages=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
printf '%s\nimport vperf_devruntime.boot\n' "$here" > "$site_packages/vperf_devruntime.pth"
