"""Test certificates for an etcd that speaks only TLS: a CA, a server
certificate for 127.0.0.1, a client certificate (openssl, P-256)."""
import os
import subprocess


def openssl(work, *args):
    subprocess.run(["openssl", *args], cwd=work, check=True, capture_output=True)


def make_certs(work):
    """ca.pem, server.pem/server.key, client.pem/client.key in `work`."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl(work, "req", "-x509", "-days", "1", "-subj", "/CN=bench-ca", *ec,
            "-keyout", "ca.key", "-out", "ca.pem")
    for who, ext in [("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n"),
                     ("client", "extendedKeyUsage=clientAuth\n")]:
        with open(os.path.join(work, f"{who}.ext"), "w") as f:
            f.write(ext)
        openssl(work, "req", "-subj", f"/CN=bench-{who}", *ec, "-keyout", f"{who}.key",
                "-out", f"{who}.csr")
        openssl(work, "x509", "-req", "-days", "1", "-in", f"{who}.csr", "-CA", "ca.pem",
                "-CAkey", "ca.key", "-CAcreateserial", "-extfile", f"{who}.ext", "-out", f"{who}.pem")


# The flags that make etcd serve only TLS with these, from their directory.
ETCD_FLAGS = ["--cert-file", "server.pem", "--key-file", "server.key",
              "--trusted-ca-file", "ca.pem", "--client-cert-auth"]
