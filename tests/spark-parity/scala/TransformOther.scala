// Scenario 2: transform using a static data set and (through transformWith, the only way
// Spark lets a per-batch function see another DStream) a second stream: joins and unions
// inside the per-batch function. Loaded with `:paste -raw` after ParityLib.scala; run by
// `TransformOther.main(sc, "raw/transform_other.json")` (see run.sh).
package org.apache.spark.streaming.sluiceparity

import org.apache.spark.SparkContext
import org.apache.spark.rdd.RDD
import org.apache.spark.streaming.{Milliseconds, StreamingContext}
import org.apache.spark.streaming.dstream.DStream

object TransformOther {
  val BatchMs = 500L

  /** Runs `build` on fresh input streams (left, right) for numBatches batches and returns
    * the run's JSON: inputs, static data, per-batch outputs. */
  def runCase[A: scala.reflect.ClassTag, B: scala.reflect.ClassTag](
      sc: SparkContext, name: String, left: Seq[Seq[A]], right: Seq[Seq[B]], static: Seq[Any], numBatches: Int)(
      build: (DStream[A], DStream[B]) => DStream[_]): String = {
    val ssc = new StreamingContext(sc, Milliseconds(BatchMs))
    val l = new SeqInputStream[A](ssc, left, 2)
    val r = new SeqInputStream[B](ssc, right, 2)
    Sink.record(s"$name/out", build(l, r))
    Sink.runFor(ssc, s"$name/out", numBatches, () => l.zeroTimeMs, BatchMs)
    Json.obj(
      "name" -> Json.str(name),
      "batch_duration_ms" -> BatchMs.toString,
      "num_batches" -> numBatches.toString,
      "inputs" -> Json.enc(left),
      "second_inputs" -> Json.enc(right),
      "static" -> Json.enc(static),
      "outputs" -> Sink.batchesJson(s"$name/out", l.zeroTimeMs, BatchMs, numBatches))
  }

  def main(sc: SparkContext, outPath: String): Unit = {
    // A static data set with a repeated key (a) and a key no batch has (d).
    val staticData = Seq(("a", "apple"), ("b", "banana"), ("a", "avocado"), ("d", "date"))
    val static: RDD[(String, String)] = sc.makeRDD(staticData, 2).cache()
    val words = Seq(Seq("a", "b", "c"), Seq("a", "a", "d"), Seq(), Seq("c", "b"))
    val otherWords = Seq(Seq("a", "c"), Seq(), Seq("b", "d"), Seq("b", "b", "e"))
    val none = Seq.empty[Seq[String]]
    val runs = Seq(
      // transform(rdd => rdd.join(static)): each batch joined with the same static pairs.
      runCase(sc, "transform_join_static", words, none, staticData, 4) { (l, _) =>
        l.map(w => (w, 1)).transform((rdd: RDD[(String, Int)]) => rdd.join(static))
      },
      // transformWith(other, (a, b) => a.join(b)): the left batch joined with the right
      // stream's batch of the same time; duplicates on both sides give every pairing.
      runCase(sc, "transform_join_other_stream", words, otherWords, Seq(), 4) { (l, r) =>
        l.map(w => (w, 1)).transformWith(r.map(w => (w, "x")),
          (a: RDD[(String, Int)], b: RDD[(String, String)]) => a.join(b))
      },
      // transformWith(other, (a, b) => a.map(_ + 4).union(b)): a map, then the other
      // stream's batch appended (RDD.union keeps the left partitions first).
      runCase(sc, "transform_map_union_other_stream",
          Seq(Seq(1, 2, 3), Seq(), Seq(10), Seq(20, 21)),
          Seq(Seq(100), Seq(200, 201), Seq(), Seq(300)), Seq(), 4) { (l, r) =>
        l.transformWith(r, (a: RDD[Int], b: RDD[Int]) => a.map(_ + 4).union(b))
      },
      // transformWith(other, (a, b) => a.union(b).join(static)): both streams' pairs
      // together, then joined with the static data set.
      runCase(sc, "transform_union_other_stream_then_join_static", words, otherWords, staticData, 4) { (l, r) =>
        l.map(w => (w, 1)).transformWith(r.map(w => (w, 1)),
          (a: RDD[(String, Int)], b: RDD[(String, Int)]) => a.union(b).join(static))
      })
    Json.write(outPath, Json.obj((Json.versions(sc) :+ ("runs" -> Json.arr(runs))): _*))
  }
}
