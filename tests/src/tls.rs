//! Test certificates for TLS servers: a throwaway CA and a server certificate for 127.0.0.1
//! signed by it, made with the `openssl` command in a temporary directory.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA and a server certificate (with its key) valid for `127.0.0.1` for one day. The files
/// live as long as this value.
pub struct TestCertificates {
    /// The CA certificate (PEM), what a client trusts.
    pub ca_cert: PathBuf,
    /// The server certificate (PEM), signed by the CA.
    pub server_cert: PathBuf,
    /// The server certificate's private key (PEM).
    pub server_key: PathBuf,
    _dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) -> io::Result<()> {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run openssl (Debian package openssl): {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(io::Error::other(format!("openssl {}: {stderr}", args.join(" "))));
    }
    Ok(())
}

impl TestCertificates {
    /// Makes the CA and the server certificate.
    pub fn new() -> io::Result<Self> {
        let dir = crate::temp_dir("tls")?;
        let key = ["-newkey", "rsa:2048", "-nodes", "-days", "1"];
        openssl(
            dir.path(),
            &[&["req", "-x509"], &key[..], &["-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=distlock test CA"]]
                .concat(),
        )?;
        openssl(
            dir.path(),
            &[
                &["req"],
                &key[..2],
                &["-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"],
            ]
            .concat(),
        )?;
        std::fs::write(dir.path().join("san.ext"), "subjectAltName=IP:127.0.0.1\n")?;
        let sign = ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"];
        openssl(dir.path(), &[&sign[..], &["-out", "server.pem", "-days", "1", "-extfile", "san.ext"]].concat())?;
        Ok(TestCertificates {
            ca_cert: dir.path().join("ca.pem"),
            server_cert: dir.path().join("server.pem"),
            server_key: dir.path().join("server.key"),
            _dir: dir,
        })
    }
}
