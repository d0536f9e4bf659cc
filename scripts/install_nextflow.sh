#!/usr/bin/env bash
# Install Nextflow from Maven Central (no get.nextflow.io / GitHub needed).
#
# Resolves io.nextflow:nextflow:<version> plus its runtime dependencies with
# Maven into <dir>/lib and writes a launcher <dir>/bin/nextflow that runs
#   java <flags of Nextflow's own launcher> -cp '<dir>/lib/*' nextflow.cli.Launcher "$@"
#
# Usage:
#   export PATH="$(scripts/install_nextflow.sh | tail -1):$PATH"
#
# Environment:
#   NXF_VER_PIN       Nextflow version (default below)
#   NXF_INSTALL_DIR   install dir (default ~/.cache/virnucpro-extract/nextflow-<version>)
#   NXF_INSTALL_FORCE=1  reinstall even if a working install exists
#   JAVA_HOME / NXF_JAVA_HOME  Java 17+ to use (else `java` on PATH)
#
# Only the last line of stdout is meaningful: the bin dir containing `nextflow`.
# Progress/diagnostics go to stderr. Maven's local repo (~/.m2) is left at its
# default so downloads are cached across runs.
#
# Why 25.04.4 and the substitutions below: Maven Central has only a partial
# set of Nextflow artifacts (Seqera publishes to its own repository).
#   - io.nextflow:nf-lang:25.04.4 is missing -> use nf-lang 25.04.0 (the
#     differences only affect the opt-in strict parser NXF_SYNTAX_PARSER=v2,
#     `nextflow lint`, and the preview workflow-output DSL).
#   - io.seqera:lib-trace:0.1.0 is missing -> excluded (only used by
#     SimpleHttpClient, i.e. the Seqera Platform/nf-tower client).
#   - 24.10.1+ : nf-httpfs of that version is missing -> nf-httpfs 24.10.0
#     (source identical across 24.10.x).
#   - 24.10.6, 25.04.0-25.04.3, 25.05.0-edge: nf-commons missing -> unusable
#     (nf-commons carries the build/version info).
set -euo pipefail

NXF_VERSION="${NXF_VER_PIN:-25.04.4}"
INSTALL_DIR="${NXF_INSTALL_DIR:-$HOME/.cache/virnucpro-extract/nextflow-${NXF_VERSION}}"
BIN_DIR="$INSTALL_DIR/bin"
LIB_DIR="$INSTALL_DIR/lib"
LAUNCHER="$BIN_DIR/nextflow"
STAMP="$INSTALL_DIR/.installed"
# bump when the launcher template or the dependency recipe changes
RECIPE_REV=1
DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.6.1"

log() { printf '[install_nextflow] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --- per-version dependency substitutions (see header) ----------------------
MANAGED_DEPS=""   # <dependency> entries for <dependencyManagement>
EXCLUSIONS=""     # <exclusion> entries on io.nextflow:nextflow
managed() { MANAGED_DEPS+="<dependency><groupId>$1</groupId><artifactId>$2</artifactId><version>$3</version></dependency>"; }
exclude() { EXCLUSIONS+="<exclusion><groupId>$1</groupId><artifactId>$2</artifactId></exclusion>"; }
case "$NXF_VERSION" in
  25.04.*)
    managed io.nextflow nf-lang 25.04.0
    exclude io.seqera lib-trace
    ;;
  24.10.0) ;;
  24.10.*)
    managed io.nextflow nf-httpfs 24.10.0
    ;;
esac
RECIPE="rev=$RECIPE_REV version=$NXF_VERSION managed=$MANAGED_DEPS exclusions=$EXCLUSIONS"

# --- idempotency: a working install with the same recipe -> done ------------
installed_ok() {
  [[ -x "$LAUNCHER" && -f "$STAMP" && -f "$LIB_DIR/nextflow-${NXF_VERSION}.jar" ]] || return 1
  [[ "$(cat "$STAMP")" == "$RECIPE" ]] || return 1
  NXF_OFFLINE=true "$LAUNCHER" -version 2>/dev/null | grep -q "version ${NXF_VERSION}\b"
}

if [[ "${NXF_INSTALL_FORCE:-0}" != 1 ]] && installed_ok; then
  log "Nextflow $NXF_VERSION already installed in $INSTALL_DIR"
  echo "$BIN_DIR"
  exit 0
fi

# --- prerequisites ----------------------------------------------------------
command -v mvn >/dev/null 2>&1 || die "mvn (Maven) not found on PATH"
JAVA_BIN="java"
[[ -n "${NXF_JAVA_HOME:-}" ]] && JAVA_BIN="$NXF_JAVA_HOME/bin/java"
[[ -z "${NXF_JAVA_HOME:-}" && -n "${JAVA_HOME:-}" ]] && JAVA_BIN="$JAVA_HOME/bin/java"
java_major=$("$JAVA_BIN" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}' | sed -E 's/^1\.//; s/[^0-9].*$//')
[[ -n "$java_major" ]] || die "cannot run Java ($JAVA_BIN)"
(( java_major >= 17 )) || die "Nextflow $NXF_VERSION needs Java 17+, found Java $java_major ($JAVA_BIN)"

mkdir -p "$(dirname "$INSTALL_DIR")"

# serialize concurrent installs into the same dir
if command -v flock >/dev/null 2>&1; then
  exec 9>"$INSTALL_DIR.lock"
  flock 9
  if [[ "${NXF_INSTALL_FORCE:-0}" != 1 ]] && installed_ok; then
    log "Nextflow $NXF_VERSION installed by a concurrent run"
    echo "$BIN_DIR"
    exit 0
  fi
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/nxf-install.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

cat > "$WORK/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 https://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.virnucpro-extract</groupId>
  <artifactId>nextflow-install</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencyManagement>
    <dependencies>${MANAGED_DEPS}</dependencies>
  </dependencyManagement>
  <dependencies>
    <dependency>
      <groupId>io.nextflow</groupId>
      <artifactId>nextflow</artifactId>
      <version>${NXF_VERSION}</version>
      <exclusions>${EXCLUSIONS}</exclusions>
    </dependency>
  </dependencies>
</project>
EOF

log "Resolving io.nextflow:nextflow:$NXF_VERSION from Maven Central (cache: ~/.m2) ..."
STAGE_LIB="$WORK/lib"
if ! mvn -q -B -Dstyle.color=never -f "$WORK/pom.xml" "$DEP_PLUGIN:copy-dependencies" \
      -DincludeScope=runtime -DoutputDirectory="$STAGE_LIB" > "$WORK/mvn.log" 2>&1; then
  sed -e 's/\x1b\[[0-9;]*m//g' "$WORK/mvn.log" >&2
  die "Maven could not resolve Nextflow $NXF_VERSION (see errors above)"
fi
[[ -f "$STAGE_LIB/nextflow-${NXF_VERSION}.jar" ]] || die "nextflow-${NXF_VERSION}.jar missing after resolution"

# --- launcher ---------------------------------------------------------------
mkdir -p "$WORK/bin"
cat > "$WORK/bin/nextflow" <<'LAUNCHER_EOF'
#!/usr/bin/env bash
# Nextflow launcher for a Maven-resolved install (written by install_nextflow.sh).
# Mirrors the JVM flags of Nextflow's official `nextflow` launch script.
set -o pipefail
[[ "${NXF_DEBUG:-}" == 'x' ]] && set -x

self="$(readlink -f "${BASH_SOURCE[0]}")"
NXF_INSTALL_HOME="$(cd "$(dirname "$self")/.." && pwd)"

NXF_HOME="${NXF_HOME:-$HOME/.nextflow}"
NXF_CLI="$0 $*"
export NXF_HOME NXF_CLI

# Java: NXF_JAVA_HOME > JAVA_CMD > JAVA_HOME > PATH (same order as upstream)
if [[ -n "${NXF_JAVA_HOME:-}" ]]; then JAVA_HOME="$NXF_JAVA_HOME"; unset JAVA_CMD; fi
if [[ ! -x "${JAVA_CMD:-}" ]]; then
  if [[ -d "${JAVA_HOME:-}" ]]; then JAVA_CMD="$JAVA_HOME/bin/java"
  else JAVA_CMD="$(command -v java || true)"
  fi
fi
[[ -x "$JAVA_CMD" ]] || { echo "nextflow: cannot find java (set JAVA_HOME or NXF_JAVA_HOME)" >&2; exit 1; }
JAVA_VER="$("$JAVA_CMD" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')"
JAVA_MAJOR="${JAVA_VER#1.}"; JAVA_MAJOR="${JAVA_MAJOR%%[^0-9]*}"
if [[ -z "$JAVA_MAJOR" || "$JAVA_MAJOR" -lt 17 ]]; then
  echo "nextflow: Java 17 or later is required (found '${JAVA_VER:-none}' at $JAVA_CMD)" >&2; exit 1
fi
export JAVA_CMD
# see https://github.com/nextflow-io/nextflow/issues/1716
unset JAVA_TOOL_OPTIONS

# parse the command line like the upstream launcher (-D jvm opts, -bg, command)
bg=''
cmd=''
declare -a jvmopts=()
declare -a args=("$@")
declare -a commands=(clone config drop help history info ls pull run view node console kuberun)
# shellcheck disable=SC2206
[[ -n "${NXF_CLI_OPTS:-}" ]] && args+=($NXF_CLI_OPTS)
for a in "$@"; do
  case "$a" in
    -D*) [[ -z "$cmd" ]] && jvmopts+=("$a") ;;
    -bg) bg=1 ;;
    -self-update|self-update|-download)
      [[ -z "$cmd" ]] && { echo "nextflow: '$a' is not supported by this Maven-based install; re-run install_nextflow.sh with NXF_VER_PIN" >&2; exit 1; } ;;
    *) [[ -n "$a" && "$a" != -* && -z "$cmd" && " ${commands[*]} " == *" $a "* ]] && cmd="$a" ;;
  esac
done

declare -a JAVA_OPTS=(-Dfile.encoding=UTF-8 -Dcom.sun.security.enableAIAcaIssuers=true)
[[ "$cmd" != console ]] && JAVA_OPTS+=(-Djava.awt.headless=true)
[[ "$cmd" != run && "$cmd" != node ]] && JAVA_OPTS+=(-XX:+TieredCompilation -XX:TieredStopAtLevel=1)
# shellcheck disable=SC2206
[[ -n "${NXF_OPTS:-}" ]] && JAVA_OPTS+=($NXF_OPTS)
NXF_TEMP="${NXF_TEMP:-${TMPDIR:-}}"
[[ -n "$NXF_TEMP" ]] && JAVA_OPTS+=("-Djava.io.tmpdir=$NXF_TEMP")
(( ${#jvmopts[@]} )) && JAVA_OPTS+=("${jvmopts[@]}")
# shellcheck disable=SC2206
[[ -n "${NXF_JVM_ARGS:-}" ]] && JAVA_OPTS+=($NXF_JVM_ARGS)

JAVA_OPTS+=(
  --add-opens=java.base/java.lang=ALL-UNNAMED
  --add-opens=java.base/java.io=ALL-UNNAMED
  --add-opens=java.base/java.nio=ALL-UNNAMED
  --add-opens=java.base/java.net=ALL-UNNAMED
  --add-opens=java.base/java.util=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent.locks=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED
  --add-opens=java.base/java.nio.file.spi=ALL-UNNAMED
  --add-opens=java.base/sun.nio.ch=ALL-UNNAMED
  --add-opens=java.base/sun.nio.fs=ALL-UNNAMED
  --add-opens=java.base/sun.net.www.protocol.http=ALL-UNNAMED
  --add-opens=java.base/sun.net.www.protocol.https=ALL-UNNAMED
  --add-opens=java.base/sun.net.www.protocol.ftp=ALL-UNNAMED
  --add-opens=java.base/sun.net.www.protocol.file=ALL-UNNAMED
  --add-opens=java.base/jdk.internal.misc=ALL-UNNAMED
  --add-opens=java.base/jdk.internal.vm=ALL-UNNAMED
  --add-opens=java.base/java.util.regex=ALL-UNNAMED
)
if (( JAVA_MAJOR >= 24 )); then
  JAVA_OPTS+=(--enable-native-access=ALL-UNNAMED --sun-misc-unsafe-memory-access=allow)
fi
if [[ "${NXF_ENABLE_VIRTUAL_THREADS:-}" == true ]]; then
  if (( JAVA_MAJOR < 19 )); then echo "nextflow: virtual threads require Java 19+ (found $JAVA_VER)" >&2; exit 1
  elif (( JAVA_MAJOR < 21 )); then JAVA_OPTS+=(--enable-preview)
  fi
  export NXF_ENABLE_VIRTUAL_THREADS
fi

cmdline=("$JAVA_CMD" "${JAVA_OPTS[@]}" -cp "$NXF_INSTALL_HOME/lib/*" nextflow.cli.Launcher "${args[@]}")
if [[ -n "$bg" ]]; then
  "${cmdline[@]}" &
  disown
  echo $! > "${NXF_PID_FILE:-.nextflow.pid}"
  exit 0
fi
exec "${cmdline[@]}"
LAUNCHER_EOF
chmod 755 "$WORK/bin/nextflow"

# --- move into place (replace any previous/partial install) ------------------
rm -rf "$INSTALL_DIR.new"
mkdir -p "$INSTALL_DIR.new"
mv "$STAGE_LIB" "$INSTALL_DIR.new/lib"
mv "$WORK/bin" "$INSTALL_DIR.new/bin"
printf '%s' "$RECIPE" > "$INSTALL_DIR.new/.installed"
if [[ -e "$INSTALL_DIR" ]]; then
  # only ever replace something that looks like one of our installs
  if [[ -f "$INSTALL_DIR/.installed" || -e "$INSTALL_DIR/lib" || -e "$INSTALL_DIR/bin/nextflow" ]] \
     || [[ -d "$INSTALL_DIR" && -z "$(ls -A "$INSTALL_DIR")" ]]; then
    rm -rf "$INSTALL_DIR"
  else
    rm -rf "$INSTALL_DIR.new"
    die "$INSTALL_DIR exists and is not a Nextflow install made by this script; refusing to overwrite"
  fi
fi
mv "$INSTALL_DIR.new" "$INSTALL_DIR"

installed_ok || die "installed launcher $LAUNCHER does not run (try: NXF_OFFLINE=true $LAUNCHER -version)"
log "Installed Nextflow $NXF_VERSION in $INSTALL_DIR ($(du -sh "$INSTALL_DIR" | cut -f1))"
echo "$BIN_DIR"
