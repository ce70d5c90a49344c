# Shared by infra/kafka-single.sh (kafka.sh, kafka-secure.sh) and infra/kafka-cluster.sh; sourced, not run.
# It defines the paths both use and fetch_jars; the caller defines log().
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
cache=${FUSION_CACHE:-$root/.cache}
lib=$cache/kafka-lib
pom=$here/kafka/pom.xml

# The broker's jars, from Maven Central through infra/kafka/pom.xml into $lib (again only when the pom changes).
fetch_jars() {
  local stamp
  stamp="$lib/.pom-$(sha256sum "$pom" | cut -c1-16)"
  [[ -f $stamp ]] && return 0
  log "fetching the broker's jars from Maven Central (once)"
  rm -rf "$lib" && mkdir -p "$lib"
  mvn -q -B -f "$pom" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$lib"
  touch "$stamp"
}
