//! A Kafka-protocol broker on loopback for tests and benchmarks: `scripts/kafka PORT`
//! (Tansu, installed on first use) on a free port of 127.0.0.1.

use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// A running broker. It is killed when this is dropped, and when the thread that started
/// it ends (parent-death signal), so that no broker outlives its test or benchmark.
pub struct Broker {
    child: Child,
    address: String,
}

impl Broker {
    /// Starts `scripts/kafka PORT` on a free port and waits until the port answers.
    pub fn start() -> Self {
        Self::start_advertising(None)
    }

    /// As [`Broker::start`], the broker advertising `advertised` (`host:port`) rather than
    /// its own address, if given.
    pub fn start_advertising(advertised: Option<&str>) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = Command::new(super::root().join("scripts/kafka"));
        command
            .arg(port.to_string())
            .args(advertised)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe; it only sets this child's death signal.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        let child = command.spawn().expect("scripts/kafka starts");
        let address = format!("127.0.0.1:{port}");
        // Installing the broker on first use may take a while.
        super::wait::until(
            Duration::from_secs(120),
            &format!("the broker on {address} to answer"),
            || TcpStream::connect(&address).is_ok(),
        );
        Self { child, address }
    }

    /// Its `host:port`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Waits until it ends (it should not).
    pub fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait()
    }

    /// The CPU time (user + system) it has used so far, from `/proc/PID/stat`. The script
    /// `exec`s the broker, so the process is the broker itself.
    pub fn cpu_time(&self) -> Duration {
        let process = format!("/proc/{}", self.child.id());
        let name = std::fs::read_to_string(format!("{process}/comm")).expect("the broker runs");
        assert_eq!(name.trim(), "tansu", "{process} is not the broker");
        let stat = std::fs::read_to_string(format!("{process}/stat")).expect("the broker runs");
        // The fields after the command name (in parentheses, which may hold spaces):
        // utime and stime are the 14th and 15th fields of the whole line.
        let after_name = &stat[stat.rfind(')').expect("a command name") + 2..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf only reads a configuration value.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_secs_f64(ticks as f64 / per_second as f64)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates `name` with `partitions` partitions on the broker at `brokers`, or panics.
pub fn create_topic(brokers: &str, name: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let results = runtime
        .block_on(admin.create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        ))
        .unwrap();
    for result in results {
        result.unwrap_or_else(|(topic, error)| panic!("cannot create {topic}: {error}"));
    }
}
