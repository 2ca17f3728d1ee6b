// Shared helpers for the Spark-parity scripts. Loaded with `:paste -raw` (see run.sh), so
// these are plain top-level classes: no REPL wrapper objects end up in serialized DStream
// graphs. The package sits under org.apache.spark.streaming to read `zeroTime` and
// `checkpointDuration` (private[streaming]), as Spark's own TestInputStream does.
package org.apache.spark.streaming.sluiceparity

import java.nio.charset.StandardCharsets
import java.nio.file.{Files, Paths}
import java.util.concurrent.ConcurrentHashMap

import scala.collection.JavaConverters._
import scala.reflect.ClassTag

import org.apache.spark.rdd.RDD
import org.apache.spark.streaming.{StreamingContext, Time}
import org.apache.spark.streaming.dstream.{DStream, InputDStream}

/** Batch n (1-based; time zeroTime + n * batch) is input(n - 1), split into `numPartitions`
  * contiguous slices by makeRDD; past the end of `input`, empty. Serializable, so unlike
  * queueStream it can be part of a checkpointed graph (mapWithState needs one). */
class SeqInputStream[T: ClassTag](_ssc: StreamingContext, val input: Seq[Seq[T]], numPartitions: Int)
    extends InputDStream[T](_ssc) {
  override def start(): Unit = {}
  override def stop(): Unit = {}
  override def compute(validTime: Time): Option[RDD[T]] = {
    val index = ((validTime - zeroTime) / slideDuration - 1).toInt
    val batch = if (index < input.size) input(index) else Seq.empty[T]
    Some(context.sparkContext.makeRDD(batch, numPartitions))
  }
  def zeroTimeMs: Long = zeroTime.milliseconds
}

/** Driver-side store for what output operations collected, by output name and batch time. */
object Sink {
  // name -> batch time ms -> (records, extra flag)
  val data = new ConcurrentHashMap[String, ConcurrentHashMap[Long, (Seq[Any], Boolean)]]()

  def put(name: String, timeMs: Long, records: Seq[Any], flag: Boolean): Unit = {
    data.computeIfAbsent(name, _ => new ConcurrentHashMap[Long, (Seq[Any], Boolean)]())
    data.get(name).put(timeMs, (records, flag))
  }

  /** Collects every batch of `stream` (empty batches included) under `name`. */
  def record[T](name: String, stream: DStream[T]): Unit =
    stream.foreachRDD { (rdd: RDD[T], t: Time) => Sink.put(name, t.milliseconds, rdd.collect().toSeq, false) }

  /** Like record, and flags the batches whose parent RDD (for stateSnapshots: the
    * MapWithStateRDD) was checkpointed by the time this output ran. */
  def recordWithCheckpointFlag[T](name: String, stream: DStream[T]): Unit =
    stream.foreachRDD { (rdd: RDD[T], t: Time) =>
      val records = rdd.collect().toSeq
      val checkpointed = rdd.dependencies.map(_.rdd).exists(_.isCheckpointed)
      Sink.put(name, t.milliseconds, records, checkpointed)
    }

  def batches(name: String): Map[Long, (Seq[Any], Boolean)] =
    Option(data.get(name)).map(_.asScala.toMap).getOrElse(Map.empty)

  /** Starts `ssc`, waits until output `marker` has `numBatches` batches, stops it (not the
    * SparkContext). */
  def runFor(ssc: StreamingContext, marker: String, numBatches: Int, zeroOf: () => Long, batchMs: Long): Unit = {
    ssc.start()
    val deadline = System.currentTimeMillis() + 120000L
    def done = {
      val z = zeroOf()
      batches(marker).keys.count(t => (t - z) / batchMs <= numBatches) >= numBatches
    }
    while (!done) {
      if (System.currentTimeMillis() > deadline) sys.error(s"timed out waiting for $numBatches batches of $marker")
      Thread.sleep(50)
    }
    ssc.stop(stopSparkContext = false, stopGracefully = false)
  }

  /** Output `name` as a JSON array of batches 1..numBatches (fails if one is missing). */
  def batchesJson(name: String, zeroMs: Long, batchMs: Long, numBatches: Int): String = {
    val byNumber = batches(name).map { case (t, v) => (((t - zeroMs) / batchMs).toInt, v) }
    Json.arr((1 to numBatches).map { n =>
      Json.arr(byNumber.getOrElse(n, sys.error(s"$name: no batch $n"))._1.map(Json.enc))
    })
  }

  def flaggedBatches(name: String, zeroMs: Long, batchMs: Long, numBatches: Int): Seq[Int] =
    batches(name).collect { case (t, (_, true)) => ((t - zeroMs) / batchMs).toInt }
      .filter(n => n >= 1 && n <= numBatches).toSeq.sorted
}

/** JSON text for records, with the typed mapping of tests/spark-parity/README.md:
  * tuples -> {"$tuple": [...]}, Seq/List -> arrays, null and None -> null, Some(x) -> x,
  * Int/Long -> integer literals, Double -> literals that always have a '.' or exponent. */
object Json {
  def enc(v: Any): String = v match {
    case null => "null"
    case None => "null"
    case Some(x) => enc(x)
    case s: String => str(s)
    case b: Boolean => b.toString
    case i: Int => i.toString
    case l: Long => l.toString
    case d: Double =>
      require(!d.isNaN && !d.isInfinite, s"no JSON for $d")
      d.toString // always "1.0" / "2.5" / "1.0E10": never an integer literal
    case p: Product if p.productPrefix.startsWith("Tuple") =>
      "{\"$tuple\":" + arr(p.productIterator.map(enc).toSeq) + "}"
    case m: scala.collection.Map[_, _] => sys.error(s"no JSON mapping for map $m")
    case it: Iterable[_] => arr(it.map(enc).toSeq)
    case a: Array[_] => arr(a.toSeq.map(enc))
    case other => sys.error(s"no JSON mapping for ${other.getClass}: $other")
  }
  def str(s: String): String = {
    val b = new StringBuilder("\"")
    s.foreach {
      case '"' => b ++= "\\\""
      case '\\' => b ++= "\\\\"
      case c if c < ' ' => b ++= f"\\u${c.toInt}%04x"
      case c => b += c
    }
    (b += '"').toString
  }
  def arr(items: Seq[String]): String = items.mkString("[", ",", "]")
  def obj(fields: (String, String)*): String = fields.map { case (k, v) => str(k) + ":" + v }.mkString("{", ",", "}")
  def write(path: String, text: String): Unit = {
    Files.createDirectories(Paths.get(path).toAbsolutePath.getParent)
    Files.write(Paths.get(path), (text + "\n").getBytes(StandardCharsets.UTF_8))
  }
  def versions(sc: org.apache.spark.SparkContext): Seq[(String, String)] = Seq(
    "spark_version" -> str(sc.version),
    "scala_version" -> str(scala.util.Properties.versionNumberString),
    "java_version" -> str(System.getProperty("java.version")),
    "java_vm" -> str(System.getProperty("java.vm.name") + " " + System.getProperty("java.vm.version")),
    "master" -> str(sc.master)
  )
}
