// The word count of `cargo bench --bench wordcount` (issue 14) as a Spark user writes it:
// a Scala DStream, flatMap(tokenize), map((_, 1)), reduceByKey(_ + _), output written.
// Run by `scripts/spark wordcount INPUT OUTPUT` in bin/spark-shell (local[2]), which sets
// SLUICE_SPARK_INPUT and SLUICE_SPARK_OUTPUT. Each file of INPUT, in name order, is one
// batch: a queue stream of the files' text RDDs, one RDD per batch (the files are read in
// the batch's job, as Sluice's file source reads its file). As each batch ends, a
// StreamingListener's report is printed as `sluice-spark batch N ended_ms T`; the shell
// exits once every file's batch has ended.

import java.io.File
import java.util.Locale
import java.util.concurrent.LinkedBlockingQueue

import scala.collection.mutable

import org.apache.spark.SparkContext
import org.apache.spark.rdd.RDD
import org.apache.spark.streaming.{Milliseconds, StreamingContext}
import org.apache.spark.streaming.scheduler.{BatchInfo, StreamingListener, StreamingListenerBatchCompleted}

object SluiceWordCount {
  def run(sc: SparkContext, input: String, output: String): Unit = {
    // The semantics of Sluice's `wordcount::tokenize`: split on Unicode white space, trim
    // what is neither alphabetic nor numeric from both ends, drop empty words, lower-case.
    // A hand-written scanner rather than a regular expression: Spark's fair best.
    // Local values, so that the closures capture nothing of the shell.
    val isSpace = (c: Int) => Character.isSpaceChar(c) || (c >= 9 && c <= 13) || c == 0x85
    val isAlphanumeric = (c: Int) =>
      Character.isAlphabetic(c) || {
        val kind = Character.getType(c)
        kind == Character.DECIMAL_DIGIT_NUMBER || kind == Character.LETTER_NUMBER ||
        kind == Character.OTHER_NUMBER
      }
    val tokenize = (line: String) => {
      val words = new mutable.ArrayBuffer[String](16)
      val length = line.length
      var at = 0
      while (at < length) {
        while (at < length && isSpace(line.codePointAt(at))) {
          at += Character.charCount(line.codePointAt(at))
        }
        var start = at
        while (at < length && !isSpace(line.codePointAt(at))) {
          at += Character.charCount(line.codePointAt(at))
        }
        var end = at
        while (start < end && !isAlphanumeric(line.codePointAt(start))) {
          start += Character.charCount(line.codePointAt(start))
        }
        while (end > start && !isAlphanumeric(line.codePointBefore(end))) {
          end -= Character.charCount(line.codePointBefore(end))
        }
        if (start < end) words += line.substring(start, end).toLowerCase(Locale.ROOT)
      }
      words
    }

    val files = new File(input).listFiles().filter(_.isFile).map(_.getPath).sorted
    require(files.nonEmpty, s"$input holds no batch files")
    val ssc = new StreamingContext(sc, Milliseconds(100))
    val ended = new LinkedBlockingQueue[BatchInfo]()
    ssc.addStreamingListener(new StreamingListener {
      override def onBatchCompleted(completed: StreamingListenerBatchCompleted): Unit =
        ended.put(completed.batchInfo)
    })
    val batches = mutable.Queue[RDD[String]](files.toSeq.map(sc.textFile(_)): _*)
    val counts = ssc
      .queueStream(batches, oneAtATime = true)
      .flatMap(tokenize)
      .map((_, 1))
      .reduceByKey(_ + _)
    counts.map { case (word, count) => s"$word\t$count" }.saveAsTextFiles(s"$output/batch")
    ssc.start()
    // The first batches take the queue's RDDs one each, and one batch runs at a time, so
    // the first reports to arrive are those of the files' batches, in order.
    for (number <- 1 to files.length) {
      val info = ended.take()
      println(s"sluice-spark batch $number ended_ms ${info.processingEndTime.get}")
    }
    ssc.stop(stopSparkContext = true, stopGracefully = true)
  }
}

SluiceWordCount.run(sc, sys.env("SLUICE_SPARK_INPUT"), sys.env("SLUICE_SPARK_OUTPUT"))
System.exit(0)
