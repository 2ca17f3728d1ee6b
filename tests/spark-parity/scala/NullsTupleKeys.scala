// Scenario 4: records holding null/None and tuple keys: reduceByKey over tuple (and null,
// nested-tuple, list) keys with Option values, countByValue of such records, and distinct
// over records containing null. Loaded with `:paste -raw` after ParityLib.scala; run by
// `NullsTupleKeys.main(sc, "raw/nulls_tuple_keys.json")` (see run.sh).
package org.apache.spark.streaming.sluiceparity

import org.apache.spark.SparkContext
import org.apache.spark.rdd.RDD

object NullsTupleKeys {
  type Pair = (Any, Option[Int])
  val pairs: Seq[Seq[Pair]] = Seq(
    Seq((("a", 1), Some(1)), (("a", 1), None), (("a", 2), Some(5)), (("b", 1), None), (("b", 1), None),
      ((("a", 1), "x"), Some(2)), (null, Some(7)), (null, None), (("a", 1), Some(10))),
    Seq((("a", 1), None), (List("a", 1), Some(3)), (("a", 1), Some(4))),
    Seq())
  val withNulls: Seq[Seq[Any]] = Seq(
    Seq(null, null, (null, 1), (null, 1), List(null), List(null), ("a", null), (null, null), 0, ""),
    Seq(null, (null, null), List(), List()))

  /** None is "no value": the sum of the values that are present, None if none is. */
  def sumIgnoringNone(x: Option[Int], y: Option[Int]): Option[Int] = (x, y) match {
    case (Some(a), Some(b)) => Some(a + b)
    case (a, None) => a
    case (None, b) => b
  }

  def main(sc: SparkContext, outPath: String): Unit = {
    val none = Seq.empty[Seq[Any]]
    val runs = Seq(
      TransformOther.runCase(sc, "reduce_by_key_tuple_keys_none_values", pairs, none, Seq(), 3) { (l, _) =>
        l.reduceByKey(sumIgnoringNone _)
      },
      TransformOther.runCase(sc, "count_by_value_records_with_none", pairs, none, Seq(), 3) { (l, _) =>
        l.countByValue()
      },
      TransformOther.runCase(sc, "distinct_records_with_null", withNulls, none, Seq(), 2) { (l, _) =>
        l.transform((a: RDD[Any]) => a.distinct())
      })
    Json.write(outPath, Json.obj((Json.versions(sc) :+ ("runs" -> Json.arr(runs))): _*))
  }
}
