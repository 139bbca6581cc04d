//! Byte streams through the real binaries: a multi-megabyte file piped
//! `producer --create` -> `consumer` arrives byte-identical, and a consumer
//! whose stdout is closed early (`consumer | head -c 1`) ends quietly.

use std::io::Read;
use std::process::Stdio;

use ipc_tests::{cmd, run, wait_until, ChildGuard, ShmName, TempDir, PATIENCE};

fn random_bytes(len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or((a.len() != b.len()).then_some(a.len().min(b.len())))
}

#[test]
fn file_streamed_producer_to_consumer_arrives_identical() {
    const LEN: usize = 8 << 20;
    let dir = TempDir::new("stream");
    let input_path = dir.path().join("input.bin");
    std::fs::write(&input_path, random_bytes(LEN)).expect("write input file");
    let name = ShmName::new("stream");

    let mut producer = ChildGuard::new(
        cmd("producer")
            .args(["--segment", name.as_str(), "--create", "--capacity", "16"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn producer"),
    );
    // The consumer can open the segment once its file exists (open waits
    // for the creator to finish initializing it).
    wait_until("the producer to create the segment", || {
        name.path().exists()
    });
    let consumer = ChildGuard::new(
        cmd("consumer")
            .args(["--segment", name.as_str()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn consumer"),
    );

    // Pipe the file into the producer's stdin from another thread, then
    // close it: end of file makes the producer detach.
    let mut stdin = producer
        .0
        .as_mut()
        .expect("producer")
        .stdin
        .take()
        .expect("stdin");
    let feeder_path = input_path.clone();
    let feeder = std::thread::spawn(move || {
        let mut file = std::fs::File::open(feeder_path).expect("open input");
        std::io::copy(&mut file, &mut stdin).expect("feed the producer");
    });

    let out = consumer.output_timeout(PATIENCE);
    let prod = producer.output_timeout(PATIENCE);
    feeder.join().expect("feeder thread");
    assert!(
        prod.status.success(),
        "producer failed: {:?}\n{}",
        prod.status,
        String::from_utf8_lossy(&prod.stderr)
    );
    assert!(
        out.status.success(),
        "consumer failed: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let input = std::fs::read(&input_path).expect("read input");
    assert!(
        out.stdout == input,
        "the stream arrived changed: {} bytes sent, {} received, first difference at {:?}",
        input.len(),
        out.stdout.len(),
        first_difference(&input, &out.stdout)
    );
}

#[test]
fn consumer_with_closed_stdout_ends_quietly() {
    let name = ShmName::new("closed-stdout");
    let created = run(
        {
            let mut c = cmd("ipcctl");
            c.args(["create", name.as_str(), "--capacity", "4"]);
            c
        },
        PATIENCE,
    );
    assert!(created.status.success(), "{created:?}");

    let mut consumer = ChildGuard::new(
        cmd("consumer")
            .args(["--segment", name.as_str()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn consumer"),
    );
    // Far more than the pipe and the ring hold: the consumer is still
    // writing when we close its stdout.
    let producer = ChildGuard::new(
        cmd("producer")
            .args(["--segment", name.as_str()])
            .args(["--count", "10000000", "--size", "1000", "--id", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn producer"),
    );

    let mut stdout = consumer
        .0
        .as_mut()
        .expect("consumer")
        .stdout
        .take()
        .expect("stdout");
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).expect("read the first bytes");
    drop(stdout); // `| head -c 16` exits

    let out = consumer.output_timeout(PATIENCE);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "consumer with a closed stdout must exit 0: {:?}\n{stderr}",
        out.status
    );
    for bad in ["error", "Broken pipe", "panicked"] {
        assert!(
            !stderr.to_lowercase().contains(&bad.to_lowercase()),
            "consumer printed {bad:?} after its stdout closed:\n{stderr}"
        );
    }
    // The producer notices its only consumer left and ends (with an error:
    // nobody will read the rest).
    let prod = producer.output_timeout(PATIENCE);
    assert!(prod.status.code().is_some(), "producer killed: {prod:?}");
}
