//! Debian's `redis-server` for the tests of state shared by replicas: started on a port
//! from the OS, killed on drop; `None` (with a message) when it is not installed.

use inferplane_gateway::config::FileConfig;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Makes `f` replica `gw-<replica>` of a fleet sharing `redis` (none: on its own), with
/// the short sync period and fallback bound the tests wait on.
pub fn in_fleet(f: &mut FileConfig, redis: Option<&str>, replica: usize) {
    f.shared.redis = redis.map(str::to_string);
    f.shared.replica_id = Some(format!("gw-{replica}"));
    f.shared.period = Duration::from_millis(20);
    f.shared.fallback_after = Duration::from_millis(200);
}

/// A `redis-server` on 127.0.0.1, killed on drop.
pub struct Redis {
    child: Child,
    /// Its port.
    pub port: u16,
}

impl Redis {
    /// Starts one on a free port, or `None` (with a message) when it is not installed.
    pub fn start() -> Option<Redis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::on(port)
    }

    pub fn on(port: u16) -> Option<Redis> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else {
            eprintln!("skipped: redis-server is not installed (apt-get install redis-server)");
            return None;
        };
        let redis = Redis { child, port };
        for _ in 0..500 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(redis);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server did not listen on {port} within 5 s");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
