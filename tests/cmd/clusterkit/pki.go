package main

import (
	"crypto/ecdsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nodegress/nodegress/tests/internal/pki"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// identity is a client of the API server: a certificate (CN is the user,
// O the groups) and a kubeconfig with it.
type identity struct {
	file   string // kubeconfig base name
	user   string
	groups []string
	server string
}

// pkiCmd writes everything the cluster authenticates with into dir:
// ca.{crt,key}; apiserver.{crt,key} for the ips and the in-cluster names of
// the API server; apiserver-kubelet-client.{crt,key} (the API server's
// identity towards kubelets); sa.{key,pub} signing ServiceAccount tokens;
// and a kubeconfig per component: admin (system:masters, for the host),
// controller-manager, scheduler, kube-proxy and one per node
// (system:node:NAME in system:nodes, what the Node authorizer expects).
func pkiCmd(args []string) error {
	fs := flag.NewFlagSet("pki", flag.ContinueOnError)
	dir := fs.String("dir", "", "output directory (required)")
	ips := fs.String("ips", "", "comma-separated IP addresses of the API server's serving certificate")
	server := fs.String("server", "", "API server URL for the cluster's components (required)")
	adminServer := fs.String("admin-server", "", "API server URL for admin.kubeconfig (default --server)")
	nodes := fs.String("nodes", "", "comma-separated node names")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || *server == "" {
		return errors.New("pki: --dir and --server are required")
	}
	if *adminServer == "" {
		*adminServer = *server
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}

	now := time.Now()
	// From an hour back, so a slightly skewed clock still accepts them; a
	// year ahead, longer than any cluster lives here.
	notBefore, notAfter := now.Add(-time.Hour), now.Add(365*24*time.Hour)

	ca, err := pki.NewCA("nodegress-cluster-ca", notBefore, notAfter)
	if err != nil {
		return err
	}
	caKey, caCert, caDER := ca.Key, ca.Cert, ca.DER
	caPEM := pki.PEM("CERTIFICATE", caDER)
	if err := writeKeyPair(*dir, "ca", caDER, caKey); err != nil {
		return err
	}

	srvTmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default",
			"kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
	}
	for _, s := range splitList(*ips) {
		ip := net.ParseIP(s)
		if ip == nil {
			return fmt.Errorf("pki: bad IP %q", s)
		}
		srvTmpl.IPAddresses = append(srvTmpl.IPAddresses, ip)
	}
	if err := issue(*dir, "apiserver", srvTmpl, caCert, caKey); err != nil {
		return err
	}
	if err := issue(*dir, "apiserver-kubelet-client", clientTmpl("kube-apiserver-kubelet-client",
		[]string{"system:masters"}, notBefore, notAfter), caCert, caKey); err != nil {
		return err
	}

	saKey, err := pki.NewKey()
	if err != nil {
		return err
	}
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return err
	}
	saKeyPEM, err := pki.KeyPEM(saKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*dir, "sa.key"), saKeyPEM, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*dir, "sa.pub"), pki.PEM("PUBLIC KEY", saPub), 0o600); err != nil {
		return err
	}

	ids := []identity{
		{"admin", "nodegress-cluster-admin", []string{"system:masters"}, *adminServer},
		{"controller-manager", "system:kube-controller-manager", nil, *server},
		{"scheduler", "system:kube-scheduler", nil, *server},
		{"kube-proxy", "system:kube-proxy", nil, *server},
	}
	for _, n := range splitList(*nodes) {
		ids = append(ids, identity{n, "system:node:" + n, []string{"system:nodes"}, *server})
	}
	for _, id := range ids {
		key, err := pki.NewKey()
		if err != nil {
			return err
		}
		der, _, err := pki.Sign(clientTmpl(id.user, id.groups, notBefore, notAfter), caCert, &key.PublicKey, caKey)
		if err != nil {
			return fmt.Errorf("%s: %w", id.file, err)
		}
		kp, err := pki.KeyPEM(key)
		if err != nil {
			return err
		}
		cfg := clientcmdapi.NewConfig()
		cfg.Clusters["nodegress"] = &clientcmdapi.Cluster{Server: id.server, CertificateAuthorityData: caPEM}
		cfg.AuthInfos[id.file] = &clientcmdapi.AuthInfo{ClientCertificateData: pki.PEM("CERTIFICATE", der), ClientKeyData: kp}
		cfg.Contexts["nodegress"] = &clientcmdapi.Context{Cluster: "nodegress", AuthInfo: id.file}
		cfg.CurrentContext = "nodegress"
		if err := clientcmd.WriteToFile(*cfg, filepath.Join(*dir, id.file+".kubeconfig")); err != nil {
			return err
		}
	}
	return nil
}

func clientTmpl(user string, groups []string, notBefore, notAfter time.Time) *x509.Certificate {
	return &x509.Certificate{
		Subject:     pkix.Name{CommonName: user, Organization: groups},
		NotBefore:   notBefore,
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
}

// issue signs tmpl with the CA and writes name.crt and name.key.
func issue(dir, name string, tmpl, ca *x509.Certificate, caKey *ecdsa.PrivateKey) error {
	key, err := pki.NewKey()
	if err != nil {
		return err
	}
	der, _, err := pki.Sign(tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return writeKeyPair(dir, name, der, key)
}

func writeKeyPair(dir, name string, der []byte, key *ecdsa.PrivateKey) error {
	kp, err := pki.KeyPEM(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, name+".crt"), pki.PEM("CERTIFICATE", der), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name+".key"), kp, 0o600)
}

// newKey makes an ECDSA P-256 key: fast to generate, accepted everywhere.

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
