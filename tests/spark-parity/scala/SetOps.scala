// Scenario 3: transformWith with subtract, subtractByKey and intersection, and
// transform(_.distinct()), over records of mixed types (Int 1 vs Double 1.0, String "1",
// tuples vs Lists, nested numbers) with duplicates on both sides. Loaded with
// `:paste -raw` after ParityLib.scala; run by `SetOps.main(sc, "raw/set_ops.json")`.
package org.apache.spark.streaming.sluiceparity

import org.apache.spark.SparkContext
import org.apache.spark.rdd.RDD

object SetOps {
  // Batch 1: the type mix. Batch 2: left only. Batch 3: right only. Batch 4: duplicates on
  // both sides. Batch 5: nested numbers that Scala's == equates ((1,2) == (1,2.0)).
  val left: Seq[Seq[Any]] = Seq(
    Seq(1, 1, 1.0, 2, 2.0, "1", "a", "a", (1, 2), List(1, 2), ("k", 1), 2.5),
    Seq(7, 7, 8),
    Seq(),
    Seq(3, 3, 3, "b", "b"),
    Seq((1, 2), (1, 2.0), List(1, 2), List(1.0, 2.0), (3, 4)))
  val right: Seq[Seq[Any]] = Seq(
    Seq(1.0, 2, 2, "a", List(1, 2), 3),
    Seq(),
    Seq(9),
    Seq(3, 3, "b"),
    Seq((1, 2.0), List(1.0, 2.0)))
  // Pairs for subtractByKey: keys of the same mixed types.
  val leftPairs: Seq[Seq[Any]] = Seq(
    Seq(("a", 1), ("a", 1), ("b", 2), (1, "int"), (1.0, "double"), ((1, 2), "tuple"), (List(1, 2), "list"), ("1", "string")),
    Seq(("x", 1)),
    Seq(),
    Seq(("a", 1), ("a", 2), ("c", 3)),
    Seq(((1, 2), "tuple"), ((1, 2.0), "tuple of double"), (List(1, 2), "list")))
  val rightPairs: Seq[Seq[Any]] = Seq(
    Seq(("a", 9), ("a", 8), (1.0, "x"), (List(1, 2), "y")),
    Seq(),
    Seq(("x", 0)),
    Seq(("a", 0), ("a", 0)),
    Seq(((1, 2.0), "z")))

  def main(sc: SparkContext, outPath: String): Unit = {
    type R = RDD[Any]
    val runs = Seq(
      TransformOther.runCase(sc, "subtract", left, right, Seq(), 5) { (l, r) =>
        l.transformWith(r, (a: R, b: R) => a.subtract(b))
      },
      TransformOther.runCase(sc, "intersection", left, right, Seq(), 5) { (l, r) =>
        l.transformWith(r, (a: R, b: R) => a.intersection(b))
      },
      TransformOther.runCase(sc, "subtract_by_key", leftPairs, rightPairs, Seq(), 5) { (l, r) =>
        l.map(_.asInstanceOf[(Any, Any)]).transformWith(r.map(_.asInstanceOf[(Any, Any)]),
          (a: RDD[(Any, Any)], b: RDD[(Any, Any)]) => a.subtractByKey(b))
      },
      TransformOther.runCase(sc, "distinct", left, Seq.empty[Seq[Any]], Seq(), 5) { (l, _) =>
        l.transform((a: R) => a.distinct())
      })
    Json.write(outPath, Json.obj((Json.versions(sc) :+ ("runs" -> Json.arr(runs))): _*))
  }
}
