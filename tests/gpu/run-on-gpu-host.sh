#!/usr/bin/env bash
# The GPU suite on a bare, offline GPU host (docs/gpu-host.md): installs reprotrain into the host's
# own Python, keeping the CUDA torch it has, from a wheelhouse made beforehand; runs tests/gpu and
# bench/gpu.py; writes a report (to $OUT if set, else tests/gpu/report/).
#
#   run-on-gpu-host.sh [--python PY] [--wheelhouse DIR] [--report-dir DIR] [--budget S] [--no-run-benches]
#   run-on-gpu-host.sh --make-wheelhouse [--python-version X.Y] [--platform P]... [--wheelhouse DIR]
#   run-on-gpu-host.sh --check [--python-version X.Y] [--platform P]... [--wheelhouse DIR]
#
# --check's --python-version defaults to the version the wheelhouse was made for (--make-wheelhouse
# writes it to its python-version file); otherwise it is 3.12.
#
# --make-wheelhouse (with network) downloads, for the host's Python version and platform, every
# wheel of requirements-host.txt and requirements-build.txt at requirements.lock's versions, then
# checks it. --check (no network, no GPU) proves the wheelhouse complete for that Python and
# platform: pip resolves both files from it alone, and the project's wheel builds offline.
#
# Exit status: 0 all well; 1 a test failed, a stage failed or ran out of time (run), the
# wheelhouse is incomplete (--check), making it failed (--make-wheelhouse); 2 a usage error.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
REQ="$HERE/requirements-host.txt"
BUILD_REQ="$HERE/requirements-build.txt"
LOCK="$ROOT/requirements.lock"
TOOL="$HERE/host_tool.py"

MODE="run"
PY=python3
WHEELHOUSE="$HERE/wheelhouse"
PYVER=""  # the wheelhouse's Python: --python-version, else (--check) what it was made for, else 3.12
PLATFORMS=()
REPORT_DIR=""
BUDGET=510  # seconds for the whole run: well inside a 10-minute command
RUN_BENCHES=1
RESERVE=20  # seconds kept for the report at the end

# seconds each stage may take at most (less when the budget has less left)
CAP_FACTS=90
CAP_INSTALL=150
CAP_TESTS=300
CAP_BENCH=180
TEST_TIMEOUT=150  # per test: a hung test fails alone instead of taking the stage with it

usage() { sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; }
die_usage() {
	echo "run-on-gpu-host.sh: $*" >&2
	echo "run-on-gpu-host.sh --help shows the options" >&2
	exit 2
}
say() { echo "[gpu-host] $*" >&2; }

while (($#)); do
	case $1 in
	--make-wheelhouse) MODE="make" ;;
	--check) MODE="check" ;;
	--python | --wheelhouse | --python-version | --platform | --report-dir | --budget)
		(($# >= 2)) || die_usage "$1 needs a value"
		case $1 in
		--python) PY=$2 ;;
		--wheelhouse) WHEELHOUSE=$2 ;;
		--python-version) PYVER=$2 ;;
		--platform) PLATFORMS+=("$2") ;;
		--report-dir) REPORT_DIR=$2 ;;
		--budget) BUDGET=$2 ;;
		esac
		shift
		;;
	--no-run-benches) RUN_BENCHES=0 ;;
	-h | --help)
		usage
		exit 0
		;;
	*) die_usage "unknown argument: $1" ;;
	esac
	shift
done
if [[ -z $PYVER && $MODE == check && -f $WHEELHOUSE/python-version ]]; then
	PYVER=$(<"$WHEELHOUSE/python-version")  # what --make-wheelhouse made it for
fi
PYVER=${PYVER:-3.12}
[[ $PYVER =~ ^3\.[0-9]+$ ]] || die_usage "--python-version wants X.Y, got '$PYVER'"
[[ $BUDGET =~ ^[0-9]+$ ]] || die_usage "--budget wants whole seconds, got '$BUDGET'"
# absolute paths: stages run in other directories (a bare command name stays a PATH lookup)
absolute() { if [[ $1 == /* ]]; then echo "$1"; else echo "$PWD/$1"; fi; }
[[ $PY != */* ]] || PY=$(absolute "$PY")
WHEELHOUSE=$(absolute "$WHEELHOUSE")
[[ -z $REPORT_DIR ]] || REPORT_DIR=$(absolute "$REPORT_DIR")
if ((${#PLATFORMS[@]} == 0)); then
	# pip matches platform tags exactly: name every manylinux a glibc 2.28 host runs
	for n in $(seq 28 -1 17); do PLATFORMS+=("manylinux_2_${n}_x86_64"); done
	PLATFORMS+=(manylinux2014_x86_64 manylinux2010_x86_64 manylinux1_x86_64)
fi
PLAT_ARGS=()
for p in "${PLATFORMS[@]}"; do PLAT_ARGS+=(--platform "$p"); done
TARGET=(--only-binary=:all: --python-version "$PYVER" --implementation cp "${PLAT_ARGS[@]}")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-host.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# pip that sees the wheelhouse alone: no configuration file, no PIP_* variable (its build
# subprocesses too, which --isolated does not reach), no index
OFFLINE_PIP=(env)
for v in $(compgen -e); do [[ $v != PIP_* ]] || OFFLINE_PIP+=(-u "$v"); done
OFFLINE_PIP+=(PIP_CONFIG_FILE=/dev/null "$PY" -m pip --isolated --disable-pip-version-check --no-input)

need_wheelhouse() {
	if ! compgen -G "$WHEELHOUSE/*.whl" >/dev/null; then
		say "no wheels in $WHEELHOUSE: make them where there is network, with"
		say "  tests/gpu/run-on-gpu-host.sh --make-wheelhouse --python-version X.Y   (X.Y: the host's)"
		return 1
	fi
}

# copy_tree: a clean copy of this tree to build reprotrain's wheel from (never a stale build/)
copy_tree() {
	rm -rf "$WORK/src" && mkdir -p "$WORK/src"
	tar -C "$ROOT" -cf - --exclude-vcs --exclude=./.venv --exclude=./build --exclude=./runs \
		--exclude=./shared --exclude='*.egg-info' --exclude=__pycache__ \
		--exclude=./tests/gpu/wheelhouse --exclude=./tests/gpu/report . | tar -C "$WORK/src" -xf -
}
# the wheel, offline: pip's build isolation takes setuptools from the wheelhouse
BUILD_WHEEL=(wheel -q --no-deps --no-index --find-links "$WHEELHOUSE" -w "$WORK/dist" "$WORK/src")

# --check ----------------------------------------------------------------------------------------

check() {
	need_wheelhouse || return 1
	say "checking $WHEELHOUSE for Python $PYVER on ${PLATFORMS[0]} (and ${#PLATFORMS[@]} platform tags in all)"
	local ok=1
	if "${OFFLINE_PIP[@]}" install --dry-run --target "$WORK/target" --no-index --find-links "$WHEELHOUSE" \
		"${TARGET[@]}" -r "$REQ" -r "$BUILD_REQ" -c "$LOCK" --report "$WORK/would.json" >"$WORK/check.log" 2>&1; then
		say "resolves offline: $("$PY" "$TOOL" would "$WORK/would.json")"
	else
		ok=0
		# pip names the first requirement it cannot meet; ask for each line alone to name them all
		local logs=("$WORK/check.log") i=0 line
		while IFS= read -r line; do
			line=${line%%#*}
			line=${line//[[:space:]]/}
			[[ -n $line ]] || continue
			i=$((i + 1))
			"${OFFLINE_PIP[@]}" install --dry-run --target "$WORK/target" --no-index --find-links "$WHEELHOUSE" \
				"${TARGET[@]}" -c "$LOCK" "$line" >"$WORK/req$i.log" 2>&1 || true
			logs+=("$WORK/req$i.log")
		done < <(cat "$REQ" "$BUILD_REQ")
		local names
		names=$("$PY" "$TOOL" missing --python-version "$PYVER" "${PLAT_ARGS[@]}" --lock "$LOCK" \
			--lock "$BUILD_REQ" "$WHEELHOUSE" "${logs[@]}")
		if [[ -n $names ]]; then
			say "INCOMPLETE: the wheelhouse has no wheel for Python $PYVER on these platforms of:"
			while IFS= read -r line; do say "  missing: $line"; done <<<"$names"
		else
			say "INCOMPLETE: pip could not resolve the requirements from the wheelhouse:"
			sed 's/^/  /' "$WORK/check.log" >&2
		fi
	fi
	if copy_tree && "${OFFLINE_PIP[@]}" "${BUILD_WHEEL[@]}" >"$WORK/build.log" 2>&1; then
		say "the project's wheel builds offline: $(cd "$WORK/dist" && ls -- *.whl)"
	else
		ok=0
		say "INCOMPLETE: the project's wheel does not build offline from the wheelhouse:"
		tail -n 15 "$WORK/build.log" | sed 's/^/  /' >&2
	fi
	if ((ok)); then
		say "wheelhouse complete for Python $PYVER"
		return 0
	fi
	return 1
}

# --make-wheelhouse --------------------------------------------------------------------------------

make_wheelhouse() {
	mkdir -p "$WHEELHOUSE"
	local before
	before=$(find "$WHEELHOUSE" -maxdepth 1 -name '*.whl' | wc -l)
	say "downloading for Python $PYVER into $WHEELHOUSE"
	"$PY" -m pip download -q --disable-pip-version-check "${TARGET[@]}" \
		-r "$REQ" -r "$BUILD_REQ" -c "$LOCK" -d "$WHEELHOUSE"
	((before == 0)) || say "note: $WHEELHOUSE had $before wheels before; remove it to start over"
	echo "$PYVER" >"$WHEELHOUSE/python-version"  # --check's default from now on
	"$PY" "$TOOL" pins "$WHEELHOUSE" "$LOCK" "$BUILD_REQ" | sed 's/^/[gpu-host] warning: /' >&2
	say "$(find "$WHEELHOUSE" -maxdepth 1 -name '*.whl' | wc -l) wheels, $(du -sh "$WHEELHOUSE" | cut -f1)"
	check
}

# the run on the GPU host ------------------------------------------------------------------------

T0=$(date +%s)
DEADLINE=$((T0 + BUDGET))
STAGE_END=0
STAGES="$WORK/stages.tsv"
FAILED=0

# stage_begin CAP: the current stage may run until CAP seconds from now, or the budget's end
stage_begin() {
	local now left
	now=$(date +%s)
	left=$((DEADLINE - RESERVE - now))
	STAGE_END=$((now + ($1 < left ? $1 : left)))
	STAGE_T=$now
}
# within CMD...: CMD under a timeout at the current stage's end (status 124: ran out of time)
within() {
	local left=$((STAGE_END - $(date +%s)))
	((left > 0)) || return 124
	timeout --kill-after=10 "$left" "$@"
}
# record NAME RESULT [NOTE]: one row of the report's stage table
record() {
	printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$(($(date +%s) - STAGE_T))" "${3:-}" >>"$STAGES"
	say "$1: $2${3:+ ($3)}"
}
outcome() { # outcome STATUS: the result word for an exit status
	case $1 in
	0) echo ok ;;
	124 | 137) echo "out of time" ;;
	*) echo "failed (status $1)" ;;
	esac
}

install() {
	local log="$REPORT_DIR/install.log" rc=0
	: >"$log"
	within "$PY" -m pip --version >>"$log" 2>&1 || {
		record install failed "the host's Python has no pip"
		return 1
	}
	# a wheelhouse made for another Python version: named, if pip then finds nothing it can use
	local hostpy foreign
	hostpy=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
	foreign=$("$PY" "$TOOL" foreign "$WHEELHOUSE" "$hostpy")
	[[ -z $foreign ]] || say "warning: wheels in $WHEELHOUSE that Python $hostpy cannot install: ${foreign//$'\n'/ }"
	within "${OFFLINE_PIP[@]}" install --no-index --find-links "$WHEELHOUSE" -r "$REQ" >>"$log" 2>&1 || rc=$?
	if ((rc)) && [[ -n $foreign ]]; then
		local why="the wheelhouse was made for another Python than this host's $hostpy"
		record install "$(outcome $rc)" "$why (${foreign%%$'\n'*}, …): make it with --make-wheelhouse --python-version $hostpy"
		return 1
	elif ((rc)); then
		record install "$(outcome $rc)" "pip install -r requirements-host.txt: see install.log"
		return 1
	fi
	echo "--- building the project's wheel from the tree" >>"$log"
	copy_tree && within "${OFFLINE_PIP[@]}" "${BUILD_WHEEL[@]}" >>"$log" 2>&1 || rc=$?
	if ((rc == 0)); then # --no-deps: pyproject's torch range must not make pip touch the host's torch
		within "${OFFLINE_PIP[@]}" install --no-index --no-deps --force-reinstall "$WORK"/dist/*.whl >>"$log" 2>&1 || rc=$?
	fi
	if ((rc)); then
		record install "$(outcome $rc)" "the project's wheel: see install.log"
		return 1
	fi
	# the fork server imports reprotrain from site-packages (python -P, another working directory)
	local where
	if ! where=$(cd "$WORK" && within "$PY" -P -c \
		'import reprotrain, reprotrain.examples.tiny_cnn, reprotrain.job.forkserver; print(reprotrain.__file__)' 2>>"$log"); then
		record install failed "the installed reprotrain does not import: see install.log"
		return 1
	fi
	record install ok "reprotrain at ${where%/__init__.py}"
}

run_tests() {
	local rc=0
	(cd "$ROOT" && within "$PY" -m pytest tests/gpu -v -p no:cacheprovider --timeout "$TEST_TIMEOUT" \
		--junitxml="$REPORT_DIR/junit.xml" >"$REPORT_DIR/pytest.log" 2>&1) || rc=$?
	local last
	last=$(grep -E '^=+ .* in [0-9.]+s' "$REPORT_DIR/pytest.log" | tail -n 1 | tr -d '=' | sed 's/^ *//;s/ *$//') || true
	record tests "$(outcome $rc)" "${last:-see pytest.log}"
	return $rc
}

run_benches() { # run_benches [ARG...]: bench/gpu.py; with --device cpu, a smoke run of its code
	local rc=0 name=benches note=""
	[[ $* != *--smoke* ]] || name="job smoke (cpu: no GPU)"
	(cd "$ROOT" && PYTHONUNBUFFERED=1 within "$PY" -m bench.gpu "$@" >"$REPORT_DIR/bench.md" 2>"$REPORT_DIR/bench.log") || rc=$?
	((rc == 0)) || note=$(tail -n 1 "$REPORT_DIR/bench.log")
	record "$name" "$(outcome $rc)" "$note"
	return $rc
}

run_host() {
	REPORT_DIR=${REPORT_DIR:-${OUT:-$HERE/report}}
	mkdir -p "$REPORT_DIR"
	REPORT_DIR=$(cd "$REPORT_DIR" && pwd)
	rm -f "$REPORT_DIR"/{report.md,install.log,pytest.log,junit.xml,bench.md,bench.log}
	: >"$STAGES"
	local cuda=0 rc

	stage_begin "$CAP_FACTS"
	rc=0
	within "$PY" "$TOOL" facts >"$WORK/facts.json" 2>"$WORK/facts.log" || rc=$?
	if ((rc)); then
		record facts "$(outcome $rc)" "$(tail -n 1 "$WORK/facts.log")"
		FAILED=1
	else
		local line
		line=$("$PY" "$TOOL" verdict "$WORK/facts.json") || rc=$?
		case $rc in
		0) cuda=1 ;;
		3) ;; # torch without a CUDA device: the tests skip, the benches do not run
		*) FAILED=1 ;;
		esac
		record facts "$( ((FAILED)) && echo failed || echo ok)" "$line"
	fi

	stage_begin "$CAP_INSTALL"
	if ((FAILED)); then
		record install skipped "the facts stage failed"
	elif ! need_wheelhouse; then
		record install failed "no wheelhouse at $WHEELHOUSE"
		FAILED=1
	else
		install || FAILED=1
	fi

	stage_begin "$CAP_TESTS"
	if ((FAILED)); then
		record tests skipped "an earlier stage failed"
	else
		run_tests || FAILED=1
	fi

	stage_begin "$CAP_BENCH"
	if [[ ! -f $REPORT_DIR/pytest.log ]]; then
		record benches skipped "an earlier stage failed"
	elif ((!cuda)); then
		# every GPU test skipped, so no job ran: a few tiny CPU jobs prove the job side runs here
		run_benches --device cpu --smoke --jobs 1 --steps 1 --warmup 1 --repeat 1 || FAILED=1
	elif ((!RUN_BENCHES)); then
		record benches skipped "--no-run-benches"
	else
		run_benches || FAILED=1
	fi

	local cmd
	cmd="run-on-gpu-host.sh --python $PY --wheelhouse $WHEELHOUSE --budget $BUDGET$( ((RUN_BENCHES)) || echo ' --no-run-benches')"
	timeout 60 "$PY" "$TOOL" render --facts "$WORK/facts.json" --stages "$STAGES" --junit "$REPORT_DIR/junit.xml" \
		--install-log "$REPORT_DIR/install.log" --pytest-log "$REPORT_DIR/pytest.log" \
		--bench "$REPORT_DIR/bench.md" --lock "$LOCK" --command "$cmd" >"$REPORT_DIR/report.md" || {
		say "could not write the report"
		FAILED=1
	}
	cat "$REPORT_DIR/report.md" 2>/dev/null || true
	say "report: $REPORT_DIR/report.md ($(($(date +%s) - T0)) s in all)"
	return $FAILED
}

case $MODE in
make) make_wheelhouse ;;
check) check ;;
run) run_host ;;
esac
