//! A real nginx for interoperation tests: one process (no master), its
//! config, pid file, logs and temp files in a directory of its own,
//! stopped by PID on drop.

use std::process::{Child, Command, Stdio};

pub struct Nginx {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx with the config `main` writes for its directory (the
    /// path as text): `load_module` lines first, then `http` / `stream`
    /// blocks; the process settings and `events` are added here.
    pub fn start(main: impl FnOnce(&str) -> String) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let conf = format!(
            "{}\ndaemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 256; }}\n",
            main(&d)
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(dir.path())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        Nginx { child, _dir: dir }
    }
}

/// An `http` block around `servers`, its temp files under `dir`.
pub fn http_block(dir: &str, servers: &str) -> String {
    format!(
        "http {{\n    access_log off;\n    client_body_temp_path {dir}/body;\n    proxy_temp_path {dir}/proxy;\n    \
         fastcgi_temp_path {dir}/fastcgi;\n    uwsgi_temp_path {dir}/uwsgi;\n    scgi_temp_path {dir}/scgi;\n{servers}\n}}"
    )
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
