#!/usr/bin/env bash
# Re-runs the Spark scripts (not part of CI) and rebuilds cases.json from their raw output.
# Needs: Java 17, and pyspark 3.5.9 (pip install pyspark==3.5.9), whose wheel carries
# bin/spark-shell. Usage: tests/spark-parity/run.sh [scenario...]
# scenarios: map_with_state_timeout transform_other set_ops nulls_tuple_keys
#            pyspark_set_ops pyspark_nulls_tuple_keys
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
PYTHON="${PYTHON:-python3}"
if [ -z "${SPARK_HOME:-}" ]; then
  SPARK_HOME="$("$PYTHON" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"
fi
export SPARK_HOME
export JAVA_HOME="${JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")}"
export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$PYTHON}"
spark_shell() { # $1 = Scala object, $2 = raw output file
  local files=(ParityLib TransformOther)
  [ "$1" = TransformOther ] || files+=("$1")
  { for f in "${files[@]}"; do echo ":paste -raw $here/scala/$f.scala"; done
    printf '%s\n' "org.apache.spark.streaming.sluiceparity.$1.main(sc, \"$here/raw/$2.json\")" ":quit"; } |
    "$SPARK_HOME/bin/spark-shell" --master 'local[2]' --driver-memory 1g --conf spark.ui.enabled=false \
      > "$here/raw/$2.log" 2>&1 || { tail -40 "$here/raw/$2.log"; exit 1; }
  grep -q 'error:' "$here/raw/$2.log" && { grep -B2 -A8 'error:' "$here/raw/$2.log" | head -60; exit 1; }
  rm -f "$here/raw/$2.log"
}
run() {
  case "$1" in
    map_with_state_timeout) spark_shell MapWithStateTimeout "$1" ;;
    transform_other) spark_shell TransformOther "$1" ;;
    set_ops) spark_shell SetOps "$1" ;;
    nulls_tuple_keys) spark_shell NullsTupleKeys "$1" ;;
    pyspark_set_ops | pyspark_nulls_tuple_keys)
      "$PYTHON" "$here/pyspark/${1#pyspark_}.py" "$here/raw/$1.json" 2> "$here/raw/$1.log" \
        && rm -f "$here/raw/$1.log" || { tail -40 "$here/raw/$1.log"; exit 1; } ;;
    *) echo "unknown scenario $1" >&2; exit 2 ;;
  esac
}
if [ $# -eq 0 ]; then
  set -- map_with_state_timeout transform_other set_ops nulls_tuple_keys pyspark_set_ops pyspark_nulls_tuple_keys
fi
for scenario in "$@"; do echo "== $scenario"; run "$scenario"; done
"$PYTHON" "$here/build_cases.py"
