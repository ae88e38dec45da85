package coordinator

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/modcoord/modcoord/pki"
)

// Size limits on what is read from etcd, checked before any JSON decoding:
// anyone who can write a key must not make a reader allocate without bound.
const (
	// MaxAssignmentBytes bounds an assignment's etcd value, signed
	// envelope included (etcd's own default request limit is 1.5 MiB).
	MaxAssignmentBytes = 1536 << 10
	// MaxWorkerInfoBytes bounds a worker's registration value.
	MaxWorkerInfoBytes = 4 << 10
)

// SignedAssignmentFormat names the signed envelope an assignment is
// stored in when the coordinators have certificates:
//
//	{"format":  "modcoord.signed-assignment.v1",
//	 "payload": base64 of the Assignment's JSON,
//	 "cert":    base64 of the signing coordinator's certificate (DER),
//	 "sig":     base64 of an ASN.1 ECDSA P-256 signature}
//
// The signature is over SHA-256 of
//
//	"modcoord.signed-assignment.v1\n" + etcd key + "\n" + payload
//
// so that a valid assignment cannot be replayed under another job's key.
// A verifier checks, in order: the size, the format, the certificate's
// chain to the cluster CA (never the system roots) and its validity now,
// that it carries the coordinator role, the signature, and that the
// payload's job is the key's.
const SignedAssignmentFormat = "modcoord.signed-assignment.v1"

type signedAssignment struct {
	Format  string `json:"format"`
	Payload []byte `json:"payload"`
	Cert    []byte `json:"cert"`
	Sig     []byte `json:"sig"`
}

func assignmentDigest(key string, payload []byte) []byte {
	h := sha256.New()
	h.Write([]byte(SignedAssignmentFormat + "\n" + key + "\n"))
	h.Write(payload)
	return h.Sum(nil)
}

// checkSigner checks that creds may sign assignments: a coordinator
// certificate whose key can sign.
func checkSigner(creds *pki.Credentials) error {
	if creds == nil {
		return errors.New("no credentials")
	}
	if creds.Identity.Role != pki.RoleCoordinator {
		return fmt.Errorf("assignments are signed with a coordinator certificate, not a %s one", creds.Identity.Role)
	}
	if _, ok := creds.Cert.PrivateKey.(crypto.Signer); !ok {
		return fmt.Errorf("the coordinator key (%T) cannot sign", creds.Cert.PrivateKey)
	}
	return nil
}

// EncodeAssignment is the etcd value of a under key: the signed envelope
// when signer is set, the bare JSON otherwise (a cluster without
// certificates).
func EncodeAssignment(key string, a Assignment, signer *pki.Credentials) ([]byte, error) {
	payload, err := json.Marshal(a)
	if err != nil {
		return nil, fmt.Errorf("encode assignment for job %s: %w", a.Job, err)
	}
	val := payload
	if signer != nil {
		if err := checkSigner(signer); err != nil {
			return nil, fmt.Errorf("sign assignment for job %s: %w", a.Job, err)
		}
		sig, err := signer.Cert.PrivateKey.(crypto.Signer).Sign(rand.Reader, assignmentDigest(key, payload), crypto.SHA256)
		if err != nil {
			return nil, fmt.Errorf("sign assignment for job %s: %w", a.Job, err)
		}
		if val, err = json.Marshal(signedAssignment{Format: SignedAssignmentFormat, Payload: payload, Cert: signer.Cert.Leaf.Raw, Sig: sig}); err != nil {
			return nil, fmt.Errorf("encode signed assignment for job %s: %w", a.Job, err)
		}
	}
	if len(val) > MaxAssignmentBytes {
		return nil, fmt.Errorf("assignment for job %s is %d bytes, over the %d a worker reads", a.Job, len(val), MaxAssignmentBytes)
	}
	return val, nil
}

// DecodeAssignment reads the etcd value of key. With trust (the cluster
// CA) it accepts only an assignment signed by a coordinator certificate
// of that CA (SignedAssignmentFormat); without, it also reads bare JSON
// and checks no signature (a cluster without certificates). now is the
// time certificates must be valid at (zero: time.Now).
func DecodeAssignment(key string, value []byte, trust *x509.CertPool, now time.Time) (Assignment, error) {
	if len(value) > MaxAssignmentBytes {
		return Assignment{}, fmt.Errorf("assignment %s is %d bytes, over the limit of %d", key, len(value), MaxAssignmentBytes)
	}
	payload := value
	// An Assignment has no "format" field, so bare JSON decodes to an
	// envelope without one.
	var env signedAssignment
	envErr := json.Unmarshal(value, &env)
	if trust != nil || (envErr == nil && env.Format == SignedAssignmentFormat) {
		if envErr != nil {
			return Assignment{}, fmt.Errorf("assignment %s: not a signed assignment: %w", key, envErr)
		}
		if env.Format != SignedAssignmentFormat {
			return Assignment{}, fmt.Errorf("assignment %s: format %q, want a %s", key, truncate(env.Format, 60), SignedAssignmentFormat)
		}
		if trust != nil {
			if err := verifyAssignment(key, env, trust, now); err != nil {
				return Assignment{}, fmt.Errorf("assignment %s: %w", key, err)
			}
		}
		payload = env.Payload
	}
	var a Assignment
	if err := json.Unmarshal(payload, &a); err != nil {
		return Assignment{}, fmt.Errorf("assignment %s: %w", key, err)
	}
	if job := key[strings.LastIndexByte(key, '/')+1:]; a.Job != job {
		return Assignment{}, fmt.Errorf("assignment %s names job %q", key, truncate(a.Job, 80))
	}
	return a, nil
}

func verifyAssignment(key string, env signedAssignment, trust *x509.CertPool, now time.Time) error {
	if now.IsZero() {
		now = time.Now()
	}
	cert, err := x509.ParseCertificate(env.Cert)
	if err != nil {
		return fmt.Errorf("signer certificate: %w", err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: trust, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("signer certificate: %w", err)
	}
	id, err := pki.IdentityOf(cert)
	if err != nil {
		return fmt.Errorf("signer certificate: %w", err)
	}
	if id.Role != pki.RoleCoordinator {
		return fmt.Errorf("signed by %s: only coordinators assign work", id)
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return fmt.Errorf("signer certificate %s may not sign", id)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return fmt.Errorf("signer %s has a %T key, not ECDSA", id, cert.PublicKey)
	}
	if !ecdsa.VerifyASN1(pub, assignmentDigest(key, env.Payload), env.Sig) {
		return fmt.Errorf("signature of %s does not match", id)
	}
	return nil
}
