//! Real etcd members on loopback, for tests and benchmarks (feature `local-cluster`): a single
//! member or a cluster, each a child `etcd` process with a temporary data directory and free
//! ports. Not for production: the members live as long as the [`LocalCluster`] value.
//!
//! The `etcd` binary is `ETCD_BIN`, else `etcd` on `PATH` (Debian: `apt-get install
//! etcd-server`; the workspace's `scripts/test.sh` installs it). Members are killed when their
//! [`LocalCluster`] is dropped, and, through a watchdog process, when the test process dies
//! without dropping it (a `static` cluster shared by a test binary's cases, or a `kill -9`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a member may take to accept connections after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One member: its process (while running), ports and data directory.
#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    process: Option<Child>,
}

/// A cluster of local etcd members.
#[derive(Debug)]
pub struct LocalCluster {
    members: Vec<Member>,
    initial_cluster: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn etcd_binary() -> PathBuf {
    std::env::var_os("ETCD_BIN").map_or_else(|| PathBuf::from("etcd"), PathBuf::from)
}

impl LocalCluster {
    /// Starts a single-member cluster.
    pub fn single() -> std::io::Result<LocalCluster> {
        Self::start(1)
    }

    /// Starts a cluster of `size` members and waits until each accepts connections.
    pub fn start(size: usize) -> std::io::Result<LocalCluster> {
        let dir = tempfile::tempdir()?;
        let mut members = Vec::with_capacity(size);
        for i in 0..size {
            members.push(Member {
                name: format!("m{i}"),
                client_port: free_port()?,
                peer_port: free_port()?,
                data_dir: dir.path().join(format!("m{i}")),
                process: None,
            });
        }
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = LocalCluster {
            members,
            initial_cluster,
            _dir: dir,
        };
        for i in 0..size {
            cluster.spawn(i)?;
        }
        for i in 0..size {
            cluster.wait_accepting(i)?;
        }
        for i in 0..size {
            cluster.wait_healthy(i)?;
        }
        Ok(cluster)
    }

    /// Waits until member `i` says it is healthy (`GET /health`: it has a leader), so a test's
    /// first call is not spent on the cluster's first election.
    fn wait_healthy(&mut self, i: usize) -> std::io::Result<()> {
        use std::io::{Read, Write};
        let deadline = Instant::now() + START_TIMEOUT;
        let port = self.members[i].client_port;
        loop {
            let answer = (|| -> std::io::Result<String> {
                let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
                stream.set_read_timeout(Some(Duration::from_secs(2)))?;
                stream.write_all(
                    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                )?;
                let mut answer = String::new();
                stream.read_to_string(&mut answer)?;
                Ok(answer)
            })();
            if answer.is_ok_and(|a| a.contains("\"health\":\"true\"")) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "etcd member {} was not healthy within {START_TIMEOUT:?}; see {}",
                    self.members[i].name,
                    self.log_of(i).display()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn spawn(&mut self, i: usize) -> std::io::Result<()> {
        let m = &self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let state = if m.data_dir.exists() {
            "existing"
        } else {
            "new"
        };
        let log = std::fs::File::create(self._dir.path().join(format!("{}.log", m.name)))?;
        let child = Command::new(etcd_binary())
            .args(["--name", &m.name, "--data-dir"])
            .arg(&m.data_dir)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &self.initial_cluster])
            .args([
                "--initial-cluster-state",
                state,
                "--initial-cluster-token",
                "orbit-test",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "cannot start {:?} ({e}): install Debian's etcd-server, or set ETCD_BIN",
                        etcd_binary()
                    ),
                )
            })?;
        watchdog(child.id())?;
        self.members[i].process = Some(child);
        Ok(())
    }

    fn wait_accepting(&mut self, i: usize) -> std::io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let port = self.members[i].client_port;
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.members[i].process.as_mut()
                && let Some(status) = child.try_wait()?
            {
                return Err(std::io::Error::other(format!(
                    "etcd member {} exited ({status}) before accepting connections; see {}",
                    self.members[i].name,
                    self.log_of(i).display()
                )));
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "etcd member {} did not accept connections within {START_TIMEOUT:?}",
                    self.members[i].name
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_of(&self, i: usize) -> PathBuf {
        self._dir
            .path()
            .join(format!("{}.log", self.members[i].name))
    }

    /// Client URLs of every member.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// Client URL of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client_port)
    }

    /// Kills member `i` (SIGKILL), keeping its data directory.
    pub fn kill(&mut self, i: usize) -> std::io::Result<()> {
        if let Some(mut child) = self.members[i].process.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Restarts a killed member `i` on its data directory and ports.
    pub fn restart(&mut self, i: usize) -> std::io::Result<()> {
        if self.members[i].process.is_none() {
            self.spawn(i)?;
            self.wait_accepting(i)?;
        }
        Ok(())
    }

    /// The data directory of member `i`.
    pub fn data_dir(&self, i: usize) -> &Path {
        &self.members[i].data_dir
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            let _ = self.kill(i);
        }
    }
}

/// A `sh` loop that kills `pid` once this process is gone: a cluster held in a `static` is
/// never dropped, and a test process may die by `kill -9`.
fn watchdog(pid: u32) -> std::io::Result<()> {
    let me = std::process::id();
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "while kill -0 {me} 2>/dev/null && kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             kill -0 {me} 2>/dev/null || kill -9 {pid} 2>/dev/null"
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(())
}
