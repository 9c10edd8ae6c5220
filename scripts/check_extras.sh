#!/usr/bin/env bash
# `make check-extras`: each extra alone makes a working install.
#
# Builds the project's wheel from a clean copy of the tracked files, installs it into one fresh
# virtualenv per extra (api, worker, client; pinned by constraints.txt, the worker's CPU torch first),
# imports every module of the packages that extra serves from outside the source tree, and checks
# what must stay out (no torch in the API, no FastAPI in the worker, no Redis/RQ/pydantic in the
# client). Then it runs the three installs together as a user would: a private redis-server, the API
# from the API-only venv until /healthz answers, a worker on the embedded model from the worker-only
# venv until /readyz says it is warm, and the `diffusion` command from the client-only venv
# generating one image through them. The image health checks (deploy/healthcheck.py) run against
# both processes.
#
# KEEP=1 keeps the work folder (printed) for a look afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/check-extras.XXXXXX")
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ "${KEEP:-0}" == 1 ]]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

step() { printf '%s [%3ds] %s\n' "check-extras" "$SECONDS" "$*"; }
quiet_pip() { "$@" 2>&1 | grep -v -e 'is ignored: it is neither a file nor a directory' || true; }
# fd 3 is the script's stderr: a failure inside a command whose output wait_until hides still shows.
exec 3>&2
fail() { echo "check-extras: FAILED: $*" >&3; exit 1; }

step "building the wheel from the tracked files"
mkdir -p "$work/src"
git ls-files -z --cached --others --exclude-standard | xargs -0 tar -cf - | tar -xf - -C "$work/src"
quiet_pip python3 -m pip wheel --quiet --no-deps --wheel-dir "$work/dist" "$work/src"
wheel=$(ls "$work"/dist/*.whl)
constraints="$root/constraints.txt"
torch=$(grep -m1 '^torch==' "$constraints")

# Bytecode is compiled on import instead of for every file at install: half the install time.
install() {  # venv, then pip arguments
  local venv=$1
  shift
  python3 -m venv "$work/$venv"
  quiet_pip "$work/$venv/bin/python" -m pip install --quiet --no-compile -c "$constraints" "$@"
  "$work/$venv/bin/python" -m pip check >"$work/$venv.pip-check" || fail "pip check in the $venv venv: $(cat "$work/$venv.pip-check")"
}

step "installing api, client and worker extras into three fresh venvs (in parallel)"
(install api "$wheel[api]") >"$work/api.install.log" 2>&1 &
api_install=$!
(install client "$wheel[client]") >"$work/client.install.log" 2>&1 &
client_install=$!
(install worker "$torch" && quiet_pip "$work/worker/bin/python" -m pip install --quiet --no-compile \
  -c "$constraints" "$wheel[worker]") >"$work/worker.install.log" 2>&1 &
worker_install=$!
for job in api:$api_install client:$client_install worker:$worker_install; do
  wait "${job#*:}" || fail "installing the ${job%%:*} extra:$(printf '\n'; cat "$work/${job%%:*}.install.log")"
done

# Run from outside the source tree, so every import comes from the venv.
cd "$work"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_until() {  # seconds, description, command...
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "timed out waiting for $what"
    sleep 0.3
  done
}
alive() { kill -0 "$1" 2>/dev/null || fail "$2 exited:$(printf '\n'; tail -30 "$3")"; }

step "starting redis-server, the API (api venv) and a worker (worker venv)"
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)
wait_until 10 "redis-server" redis-cli -p "$redis_port" ping

api_port=$(free_port)
metrics_port=$(free_port)
export REDIS_URL="redis://127.0.0.1:$redis_port/0" DIFFUSION_STORAGE_URL="$work/images" \
  DIFFUSION_URL_SIGNING_SECRET=check-extras DIFFUSION_DEFAULT_MODEL=shapes \
  DIFFUSION_PORT="$api_port" DIFFUSION_CPU_THREADS=1 OMP_NUM_THREADS=1
"$work/api/bin/python" -m app --host 127.0.0.1 --port "$api_port" >"$work/api.log" 2>&1 &
api_pid=$!
pids+=("$api_pid")
# The worker's metrics port alone: the API reads the same variable for its optional second port.
DIFFUSION_METRICS_PORT="$metrics_port" "$work/worker/bin/python" -m worker >"$work/worker.log" 2>&1 &
worker_pid=$!
pids+=("$worker_pid")

# While the worker loads and warms up (the worker venv's own import check waits for it: the worker's
# start compiles the bytecode that check would otherwise compile a second time, concurrently).
imports() {  # venv, packages that must import completely, modules that must be absent
  TRANSFORMERS_VERBOSITY=error "$work/$1/bin/python" - "$2" "$3" <<'EOF'
import importlib, importlib.util, pkgutil, sys
packages, absent = sys.argv[1].split(","), [m for m in sys.argv[2].split(",") if m]
count = 0
for name in packages:
    package = importlib.import_module(name)
    assert "site-packages" in package.__file__, f"{name} imported from {package.__file__}, not the venv"
    for info in pkgutil.walk_packages(package.__path__, f"{name}."):
        if not info.name.endswith(".__main__"):  # entry scripts: run with --help below
            importlib.import_module(info.name)
            count += 1
present = [m for m in absent if importlib.util.find_spec(m) is not None]
assert not present, f"installed but must not be: {present}"
print(f"  {sys.prefix.rsplit('/', 1)[-1]}: {count + len(packages)} modules of {','.join(packages)} import; absent: {','.join(absent)}")
EOF
}
step "importing every module of the api and client extras' packages"
imports api app,contract torch,diffusers,transformers
imports client diffusion_client rq,redis,pydantic,pydantic_settings,torch,fastapi
for entry in "api/bin/python -m app" "worker/bin/python -m worker" "client/bin/python -m diffusion_client" \
  "client/bin/diffusion"; do
  # shellcheck disable=SC2086  # the entry point is a command line
  "$work/"$entry --help >/dev/null || fail "$entry --help"
done
step "entry points answer --help: python -m app, python -m worker, python -m diffusion_client, diffusion"

api_up() { alive "$api_pid" API "$work/api.log" && curl -fsS "http://127.0.0.1:$api_port/healthz"; }
wait_until 60 "the API's /healthz" api_up
step "API (api venv) answers /healthz"
"$work/api/bin/python" "$root/deploy/healthcheck.py" api || fail "deploy/healthcheck.py api"

worker_warm() { alive "$worker_pid" worker "$work/worker.log" && curl -fsS "http://127.0.0.1:$api_port/readyz"; }
wait_until 180 "a warm worker in /readyz" worker_warm
DIFFUSION_METRICS_PORT="$metrics_port" "$work/worker/bin/python" "$root/deploy/healthcheck.py" worker || fail "deploy/healthcheck.py worker"
step "worker (worker venv) is warm: /readyz is 200 and its health check passes"
imports worker worker,contract fastapi,starlette,uvicorn

DIFFUSION_URL="http://127.0.0.1:$api_port" "$work/client/bin/diffusion" generate \
  "a red circle on a blue background" --seed 7 -o "$work/out.png" >"$work/client.log" 2>&1 \
  || fail "diffusion generate:$(printf '\n'; cat "$work/client.log")"
[[ "$(head -c 8 "$work/out.png" | od -An -tx1 | tr -d ' \n')" == 89504e470d0a1a0a ]] || fail "out.png is not a PNG"
step "the client (client venv) generated $(stat -c %s "$work/out.png") bytes of PNG through them: OK"
