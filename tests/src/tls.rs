//! Test certificates for TLS: a throwaway CA, a server certificate for 127.0.0.1 and a client
//! certificate, both signed by it, made with the `openssl` command in a temporary directory.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA, a server certificate valid for `127.0.0.1` and a client certificate (each with its
/// key), valid for one day. The files live as long as this value.
pub struct TestCertificates {
    /// The CA certificate (PEM), what a client trusts.
    pub ca_cert: PathBuf,
    /// The server certificate (PEM), signed by the CA.
    pub server_cert: PathBuf,
    /// The server certificate's private key (PEM).
    pub server_key: PathBuf,
    /// A client certificate (PEM), signed by the CA, for servers that require one.
    pub client_cert: PathBuf,
    /// The client certificate's private key (PEM).
    pub client_key: PathBuf,
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
    /// Makes the CA and the certificates it signs.
    pub fn new() -> io::Result<Self> {
        let dir = crate::temp_dir("tls")?;
        let key = ["-newkey", "rsa:2048", "-nodes", "-days", "1"];
        openssl(
            dir.path(),
            &[&["req", "-x509"], &key[..], &["-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=distlock test CA"]]
                .concat(),
        )?;
        let signed = |name: &str, subject: &str, extensions: &str| -> io::Result<()> {
            let (key_file, csr, pem, ext) =
                (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
            openssl(
                dir.path(),
                &[&["req"], &key[..2], &["-nodes", "-keyout", &key_file, "-out", &csr, "-subj", subject]].concat(),
            )?;
            std::fs::write(dir.path().join(&ext), extensions)?;
            let sign = ["x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"];
            openssl(dir.path(), &[&sign[..], &["-out", &pem, "-days", "1", "-extfile", &ext]].concat())
        };
        signed("server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1\n")?;
        signed("client", "/CN=distlock test client", "extendedKeyUsage=clientAuth\n")?;
        Ok(TestCertificates {
            ca_cert: dir.path().join("ca.pem"),
            server_cert: dir.path().join("server.pem"),
            server_key: dir.path().join("server.key"),
            client_cert: dir.path().join("client.pem"),
            client_key: dir.path().join("client.key"),
            _dir: dir,
        })
    }
}
