// Scenario 1: mapWithState with a 1 s timeout and 500 ms batches, with Spark's default
// checkpoint interval (10 batch intervals). Loaded with `:paste -raw` after ParityLib.scala;
// run by `MapWithStateTimeout.main(sc, "raw/map_with_state_timeout.json")` (see run.sh).
package org.apache.spark.streaming.sluiceparity

import java.nio.file.Files

import org.apache.spark.SparkContext
import org.apache.spark.streaming.{Milliseconds, State, StateSpec, StreamingContext}

object MapWithStateTimeout {
  val BatchMs = 500L
  val TimeoutMs = 1000L

  /** Data call: count += value, emit (key, value, count). Timeout call (no value, state
    * timing out): emit (key, "timeout", count); Spark then removes the key. */
  def countOrTimeout(key: String, value: Option[Int], state: State[Int]): (String, Any, Int) =
    if (state.isTimingOut()) (key, "timeout", state.get())
    else {
      val count = state.getOption().getOrElse(0) + value.getOrElse(0)
      state.update(count)
      (key, value.get, count)
    }

  def runCase(sc: SparkContext, name: String, inputs: Seq[Seq[String]], numBatches: Int): String = {
    val ssc = new StreamingContext(sc, Milliseconds(BatchMs))
    val checkpointDir = Files.createTempDirectory("sluiceparity-ckpt-").toString
    ssc.checkpoint(checkpointDir)
    val in = new SeqInputStream[String](ssc, inputs, 2)
    val spec = StateSpec.function(countOrTimeout _).timeout(Milliseconds(TimeoutMs))
    val mapped = in.map(word => (word, 1)).mapWithState(spec)
    Sink.record(s"$name/out", mapped)
    Sink.recordWithCheckpointFlag(s"$name/snapshots", mapped.stateSnapshots())
    Sink.runFor(ssc, s"$name/snapshots", numBatches, () => in.zeroTimeMs, BatchMs)
    val zero = in.zeroTimeMs
    // The internal state stream (mapped's only dependency) carries the checkpoint interval.
    val internal = mapped.dependencies.head
    Json.obj(
      "name" -> Json.str(name),
      "batch_duration_ms" -> BatchMs.toString,
      "timeout_ms" -> TimeoutMs.toString,
      "num_batches" -> numBatches.toString,
      "zero_time_ms" -> zero.toString,
      "first_batch_time_ms" -> (zero + BatchMs).toString,
      "state_checkpoint_interval_ms" -> internal.checkpointDuration.milliseconds.toString,
      "checkpointed_batches" -> Json.arr(Sink.flaggedBatches(s"$name/snapshots", zero, BatchMs, numBatches).map(_.toString)),
      "inputs" -> Json.enc(inputs),
      "outputs" -> Sink.batchesJson(s"$name/out", zero, BatchMs, numBatches),
      "state_snapshots" -> Sink.batchesJson(s"$name/snapshots", zero, BatchMs, numBatches)
    )
  }

  def pad(batches: Seq[Seq[String]], n: Int): Seq[Seq[String]] = batches ++ Seq.fill(n - batches.size)(Seq.empty[String])

  def main(sc: SparkContext, outPath: String): Unit = {
    // Four keys last seen at batches 2, 3, 5 and 7, then silence.
    val together = pad(Seq(
      Seq("a", "b", "c", "d"),
      Seq("a", "b", "a"),
      Seq("b", "c"),
      Seq(),
      Seq("c", "d"),
      Seq(),
      Seq("d")), 7)
    // c: only at batch 1, times out at the check at 10. a: batches 1 and 6; 6 is still old
    // enough at 10 (time(6) < time(10) - 1 s), so a times out there too, and batch 11 starts
    // it again from no state. b: batches 1 and 8; idle for 7 batches but updated before the
    // check, so no timeout call at 10; times out at 20. e: only at 9 (too recent at 10),
    // times out at 20. g: only at 17, exactly old enough at 20. f: only at 18, too recent at
    // 20, times out at 30.
    val revive = Seq.tabulate(18) {
      case 0 => Seq("a", "b", "c")
      case 5 => Seq("a")
      case 7 => Seq("b")
      case 8 => Seq("e")
      case 10 => Seq("a")
      case 16 => Seq("g")
      case 17 => Seq("f")
      case _ => Seq()
    }
    val runs = Seq(
      runCase(sc, "four_keys_time_out_together", together, 30),
      runCase(sc, "revived_and_recent_keys", revive, 32))
    Json.write(outPath, Json.obj((Json.versions(sc) :+ ("runs" -> Json.arr(runs))): _*))
  }
}
