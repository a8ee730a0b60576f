package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

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

	caKey, err := newKey()
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "nodegress-cluster-ca"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, caCert, err := sign(caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	caPEM := pemBlock("CERTIFICATE", caDER)
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

	saKey, err := newKey()
	if err != nil {
		return err
	}
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return err
	}
	saKeyPEM, err := keyPEM(saKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*dir, "sa.key"), saKeyPEM, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*dir, "sa.pub"), pemBlock("PUBLIC KEY", saPub), 0o600); err != nil {
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
		key, err := newKey()
		if err != nil {
			return err
		}
		der, _, err := sign(clientTmpl(id.user, id.groups, notBefore, notAfter), caCert, &key.PublicKey, caKey)
		if err != nil {
			return fmt.Errorf("%s: %w", id.file, err)
		}
		kp, err := keyPEM(key)
		if err != nil {
			return err
		}
		cfg := clientcmdapi.NewConfig()
		cfg.Clusters["nodegress"] = &clientcmdapi.Cluster{Server: id.server, CertificateAuthorityData: caPEM}
		cfg.AuthInfos[id.file] = &clientcmdapi.AuthInfo{ClientCertificateData: pemBlock("CERTIFICATE", der), ClientKeyData: kp}
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
	key, err := newKey()
	if err != nil {
		return err
	}
	der, _, err := sign(tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return writeKeyPair(dir, name, der, key)
}

func writeKeyPair(dir, name string, der []byte, key *ecdsa.PrivateKey) error {
	kp, err := keyPEM(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, name+".crt"), pemBlock("CERTIFICATE", der), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name+".key"), kp, 0o600)
}

// newKey makes an ECDSA P-256 key: fast to generate, accepted everywhere.
func newKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func sign(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, key *ecdsa.PrivateKey) ([]byte, *x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return der, cert, nil
}

func keyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pemBlock("EC PRIVATE KEY", der), nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
