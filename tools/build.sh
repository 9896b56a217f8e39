#!/usr/bin/env bash
# Builds the Kubernetes programs Offpeak runs against, from their Go modules, at the
# versions pinned in tools/versions.env, into .cache/tools/<name>-<version>/.
# A tool whose binaries are already cached is skipped, so a second run builds nothing.
#
#   tools/build.sh            build what is missing, print where everything is
#   tools/build.sh --path     print only the cache folder (used by the Makefile)
#
# OFFPEAK_TOOLS_DIR moves the cache (default: <repo>/.cache/tools, git-ignored).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=versions.env
source "$root/tools/versions.env"
cache=${OFFPEAK_TOOLS_DIR:-$root/.cache/tools}
if [[ ${1:-} == --path ]]; then echo "$cache"; exit 0; fi

logs=$cache/logs
mkdir -p "$logs"

die() { echo "tools: error: $*" >&2; exit 1; }

# Called by each builder once it knows it has something to build, so a cache that is
# complete needs no Go at all.
require_go() {
  command -v go >/dev/null 2>&1 ||
    die "Go is not installed or not on PATH, and $1 is not cached yet; install Go 1.24 or newer and run again"
}

# Static binaries with the local toolchain: a module asking for a newer Go fails loudly
# instead of downloading a toolchain this machine cannot reach.
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod

elapsed() { local s=$((SECONDS - $1)); printf '%dm%02ds' $((s / 60)) $((s % 60)); }

# run_step LABEL TOTAL LOG CMD...: runs CMD with its output in LOG, printing every 15 s
# how many of TOTAL packages it has compiled (go build -v names each one it compiles)
# and how long it has run. On failure prints the log's tail and exits.
run_step() {
  local label=$1 total=$2 log=$3
  shift 3
  local start=$SECONDS last_report=$SECONDS
  "$@" >"$log" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if ((SECONDS - last_report >= 15)); then
      last_report=$SECONDS
      local done_pkgs
      done_pkgs=$(grep -cv -e '^go: ' -e '^#' "$log" || true)
      if ((total > 0)); then
        printf '  %-20s %5d/%d packages (%d%%)  %s\n' "$label" "$done_pkgs" "$total" \
          $((done_pkgs * 100 / total)) "$(elapsed "$start")"
      else
        printf '  %-20s %s\n' "$label" "$(elapsed "$start")"
      fi
    fi
  done
  if ! wait "$pid"; then
    echo "tools: $label failed after $(elapsed "$start"); last lines of $log:" >&2
    tail -n 30 "$log" >&2
    die "$label failed (log: $log)"
  fi
  printf '  %-20s done in %s\n' "$label" "$(elapsed "$start")"
}

# new_module DIR: an empty throwaway module whose only job is to pin dependencies.
new_module() {
  rm -rf "$1"
  mkdir -p "$1"
  (cd "$1" && go mod init offpeak.local/tools >/dev/null 2>&1)
}

# count_deps DIR PKG...: how many packages a build of PKG compiles at most.
count_deps() {
  local dir=$1
  shift
  (cd "$dir" && go list -deps "$@" 2>/dev/null | wc -l) || echo 0
}

have_all() {
  local dir=$1
  shift
  for bin in "$@"; do [[ -x $dir/$bin ]] || return 1; done
}

# install_into DIR TMP: moves a finished build into place in one step, so an interrupted
# build never leaves a half-filled cache folder behind.
install_into() {
  rm -rf "$1"
  mv "$2" "$1"
}

build_kubernetes() {
  local version=$KUBERNETES_VERSION out=$cache/kubernetes-$KUBERNETES_VERSION
  local bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
  have_all "$out" "${bins[@]}" && return 0
  require_go "Kubernetes $version"
  echo "tools: building Kubernetes $version (${bins[*]}); the first build takes 10-25 minutes on 2 cores"
  local mod=$cache/.work/kubernetes
  new_module "$mod"
  local start=$SECONDS
  # k8s.io/kubernetes replaces its ~30 staging modules with ./staging/...; replace
  # directives of a dependency are ignored, so pin each one to its published v0.x twin.
  local gomod
  gomod=$(cd "$mod" && go mod download -json "k8s.io/kubernetes@$version" 2>"$logs/kubernetes-download.log" |
    sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p') ||
    die "could not download k8s.io/kubernetes@$version from the Go module proxy (log: $logs/kubernetes-download.log)"
  [[ -f $gomod ]] || die "could not download k8s.io/kubernetes@$version (log: $logs/kubernetes-download.log)"
  local staging_version=v0.${version#v1.}
  {
    echo "require k8s.io/kubernetes $version"
    sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod" | sort -u |
      while read -r module; do echo "replace $module => $module $staging_version"; done
  } >>"$mod/go.mod"
  local staged
  staged=$(grep -c '^replace' "$mod/go.mod")
  echo "  pinned $staged staging modules to $staging_version"
  local cmds=()
  for bin in "${bins[@]}"; do cmds+=("k8s.io/kubernetes/cmd/$bin"); done
  run_step "kubernetes modules" 0 "$logs/kubernetes-modules.log" \
    bash -c "cd '$mod' && go mod download all"
  local total
  total=$(count_deps "$mod" "${cmds[@]}")
  local minor=${version#v1.}
  minor=${minor%%.*}
  local ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  local tmp=$out.tmp
  rm -rf "$tmp"
  mkdir -p "$tmp"
  run_step "kubernetes" "$total" "$logs/kubernetes-build.log" \
    bash -c "cd '$mod' && go build -v -ldflags '$ldflags' -o '$tmp/' ${cmds[*]}"
  install_into "$out" "$tmp"
  echo "tools: Kubernetes $version built in $(elapsed "$start")"
}

build_etcd() {
  local version=$ETCD_VERSION out=$cache/etcd-$ETCD_VERSION
  have_all "$out" etcd && return 0
  require_go "etcd $version"
  echo "tools: building etcd $version"
  local mod=$cache/.work/etcd start=$SECONDS
  new_module "$mod"
  # etcd's own main package lives in its root module, which replaces its sibling modules
  # with local paths; the server module has no such replaces once it is a dependency,
  # so a three-line main that calls etcdmain builds the same program.
  cat >"$mod/main.go" <<'EOF'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  echo "require go.etcd.io/etcd/server/v3 $ETCD_VERSION" >>"$mod/go.mod"
  run_step "etcd modules" 0 "$logs/etcd-modules.log" bash -c "cd '$mod' && go mod tidy"
  local total
  total=$(count_deps "$mod" .)
  local tmp=$out.tmp
  rm -rf "$tmp"
  mkdir -p "$tmp"
  run_step "etcd" "$total" "$logs/etcd-build.log" \
    bash -c "cd '$mod' && go build -v -ldflags '-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION' -o '$tmp/etcd' ."
  install_into "$out" "$tmp"
  echo "tools: etcd $version built in $(elapsed "$start")"
}

# go_install NAME VERSION PACKAGE LDFLAGS: tools whose modules build with plain go install.
go_install() {
  local name=$1 version=$2 pkg=$3 ldflags=$4 out=$cache/$1-$2
  have_all "$out" "$name" && return 0
  require_go "$name $version"
  echo "tools: building $name $version"
  local start=$SECONDS tmp=$out.tmp
  rm -rf "$tmp"
  mkdir -p "$tmp"
  run_step "$name" 0 "$logs/$name-build.log" \
    env GOBIN="$tmp" GOFLAGS= go install -v -ldflags "-s -w $ldflags" "$pkg@$version"
  install_into "$out" "$tmp"
  echo "tools: $name $version built in $(elapsed "$start")"
}

total_start=$SECONDS
build_etcd
go_install kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok \
  "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=$KUBERNETES_VERSION"
build_kubernetes
go_install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm \
  "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
rm -rf "$cache/.work"

echo "tools: ready in $(elapsed "$total_start") under $cache"
