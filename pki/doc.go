// Package pki is modcoord's certificate authority: one CA per cluster and
// one certificate per role, so that every network link (raft between
// coordinators, the HTTP API, etcd, NATS) can be mutual TLS and every end
// can tell which kind of component is on the other side.
//
// # Roles
//
// A certificate carries exactly one role (see Role):
//
//   - coordinator: raft peers and the HTTP API server; also an etcd and
//     NATS client.
//   - worker: a training worker; an API, etcd and NATS client.
//   - user: a person's CLI; an API client only (no server auth).
//   - etcd: the etcd server (and its peer link).
//   - nats: the NATS server (and its cluster routes).
//
// The role is encoded as a URI SAN, spiffe://modcoord/role/<role>/<name>,
// and is also the subject's CommonName (SubjectFor): etcd takes the CN as
// the user of a client certificate (EtcdUser) and NATS maps the subject
// to a user (NATSUser), and both want one user per role, not per name.
// A SAN rather than the Subject's OrganizationalUnit because SANs are what
// modern verifiers treat as identity (Go ignores the CN, and an OU is free
// text that tools and CAs reorder, repeat or drop), a URI has one
// unambiguous parse, and the SPIFFE shape lets other tooling (Envoy,
// spire) read it. RoleOf refuses certificates with zero or several role
// URIs, so a role can never be guessed.
//
// A second encoding is for issuers that cannot write URI SANs (Helm's
// genSignedCert sets only the CommonName, IPs and DNS names): a CommonName
// that is exactly a role's name (RoleCommonName). IdentityOf reads it when
// a certificate has no role URI, and the identity's name is then the role.
// Such a CommonName must be the certificate's only CommonName; any other
// CommonName claims nothing. When a certificate carries both encodings
// they must name the same role. Either encoding is only a claim: what
// authenticates it is the chain to the cluster CA, which LoadCredentials
// and the TLS configurations always verify first, so the CA must sign
// modcoord certificates only (with cert-manager, an Issuer of its own, not
// a shared ClusterIssuer).
//
// # Files
//
// A directory holds ca.crt and ca.key (the CA), and <role>-<name>.crt /
// <role>-<name>.key per issued certificate. Files are written atomically
// (temporary file, fsync, rename, directory fsync); keys are 0600. Reads
// are bounded (MaxPEMFileSize) and refuse anything but regular files.
// Keys are ECDSA P-256, PKCS#8.
//
// # TLS
//
// ServerConfig and ClientConfig build TLS 1.3-only configurations (every
// endpoint is Go: the coordinators, the workers, embedded or stock etcd and
// NATS, so nothing needs 1.2 and 1.3 has no suite choices to get wrong).
// Both sides verify the peer's chain against the cluster CA only (never
// the system roots) and then its role against an explicit allow list.
//
// EnsureDir makes a throwaway CA and every role's certificate for
// `modcoord local`; WriteClusterBundle writes a real cluster's material
// for `modcoord certs`.
package pki
