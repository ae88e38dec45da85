package embedded

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"

	"go.etcd.io/etcd/api/v3/authpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcd users and roles of a modcoord cluster. With auth on, etcd takes a
// client certificate's CommonName as the user name, and pki issues every
// certificate with its role as CommonName (pki.EtcdUser), so the users
// are the roles: one etcd user per kind of component, not per process.
// The users have no password: only a certificate of the cluster CA with
// that CommonName logs in as them.
const (
	// EtcdRootUser must exist, with the root role, before etcd enables auth.
	EtcdRootUser = "root"
	// EtcdServerUser is the etcd server's own certificate (role etcd): it
	// gets the root role, so the etcd process (or whoever holds its key,
	// who owns the data directory anyway) runs SetupEtcdAuth again later.
	EtcdServerUser = "etcd"
	// EtcdCoordinatorUser may read and write everything of the clusters
	// set up: assignments, and the workers' registrations it watches.
	EtcdCoordinatorUser = "coordinator"
	// EtcdWorkerUser may read assignments and read and write the workers
	// prefix. Per-worker keys are not separated (worker names are dynamic
	// pod names, one certificate may be shared by many workers); a worker
	// can therefore disturb another's registration, and it is the
	// coordinators' signature on assignments (not etcd) that keeps a
	// worker from acting on a forged one.
	EtcdWorkerUser = "worker"

	EtcdCoordinatorRole = "modcoord-coordinator"
	EtcdWorkerRole      = "modcoord-worker"
	etcdRootRole        = "root"
)

// The etcd layout the permissions cover; coordinator.WorkersPrefix and
// AssignmentsPrefix must agree (local's tests check it).
func etcdClusterPrefix(cluster string) string { return "/modcoord/" + cluster + "/" }

// EtcdWorkersPrefix is /modcoord/<cluster>/workers/.
func EtcdWorkersPrefix(cluster string) string { return etcdClusterPrefix(cluster) + "workers/" }

// EtcdAssignmentsPrefix is /modcoord/<cluster>/assignments/.
func EtcdAssignmentsPrefix(cluster string) string {
	return etcdClusterPrefix(cluster) + "assignments/"
}

var etcdClusterName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`)

type etcdPerm struct {
	key      string
	rangeEnd string
	perm     clientv3.PermissionType
}

func prefixPerm(prefix string, perm clientv3.PermissionType) etcdPerm {
	return etcdPerm{key: prefix, rangeEnd: clientv3.GetPrefixRangeEnd(prefix), perm: perm}
}

// etcdRolePerms is what each modcoord role may do, for the given clusters.
func etcdRolePerms(clusters []string) map[string][]etcdPerm {
	out := map[string][]etcdPerm{}
	for _, c := range clusters {
		out[EtcdCoordinatorRole] = append(out[EtcdCoordinatorRole], prefixPerm(etcdClusterPrefix(c), clientv3.PermissionType(clientv3.PermReadWrite)))
		out[EtcdWorkerRole] = append(out[EtcdWorkerRole],
			prefixPerm(EtcdAssignmentsPrefix(c), clientv3.PermissionType(clientv3.PermRead)),
			prefixPerm(EtcdWorkersPrefix(c), clientv3.PermissionType(clientv3.PermReadWrite)))
	}
	return out
}

// SetupEtcdAuth creates modcoord's etcd users and roles for clusters and
// enables auth. It is idempotent: run again (by the etcd process at every
// start, or by `modcoord etcd-setup`) it adds what is missing, revokes
// permissions of the modcoord roles that the plan does not list (so a
// hand-made grant does not linger), and leaves auth on. cli must be
// allowed to administer etcd: before auth is on any client is; after, a
// client certificate with CommonName "etcd" (EtcdServerUser) or "root".
//
// Users of other roles (user, nats) get no etcd user, so their
// certificates are refused by etcd once auth is on.
func SetupEtcdAuth(ctx context.Context, cli *clientv3.Client, clusters ...string) error {
	if len(clusters) == 0 {
		return errors.New("etcd auth setup: no cluster name")
	}
	for _, c := range clusters {
		if !etcdClusterName.MatchString(c) {
			return fmt.Errorf("etcd auth setup: cluster name %q: use letters, digits, '_' or '-'", c)
		}
	}
	perms := etcdRolePerms(clusters)
	for _, role := range []string{EtcdCoordinatorRole, EtcdWorkerRole} {
		if _, err := cli.RoleAdd(ctx, role); err != nil && !errors.Is(err, rpctypes.ErrRoleAlreadyExist) {
			return fmt.Errorf("etcd auth setup: add role %s: %w", role, err)
		}
		if err := syncRolePerms(ctx, cli, role, perms[role]); err != nil {
			return fmt.Errorf("etcd auth setup: role %s: %w", role, err)
		}
	}
	for _, u := range []struct{ user, role string }{
		{EtcdRootUser, etcdRootRole}, {EtcdServerUser, etcdRootRole},
		{EtcdCoordinatorUser, EtcdCoordinatorRole}, {EtcdWorkerUser, EtcdWorkerRole},
	} {
		_, err := cli.UserAddWithOptions(ctx, u.user, "", &clientv3.UserAddOptions{NoPassword: true})
		if err != nil && !errors.Is(err, rpctypes.ErrUserAlreadyExist) {
			return fmt.Errorf("etcd auth setup: add user %s: %w", u.user, err)
		}
		if _, err := cli.UserGrantRole(ctx, u.user, u.role); err != nil {
			return fmt.Errorf("etcd auth setup: grant role %s to user %s: %w", u.role, u.user, err)
		}
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		return fmt.Errorf("etcd auth setup: enable auth: %w", err)
	}
	return nil
}

// syncRolePerms grants want to role and revokes its other permissions.
// Permissions are granted for every listed cluster but only the clusters
// listed now are kept: setting up a second cluster on the same etcd means
// listing both.
func syncRolePerms(ctx context.Context, cli *clientv3.Client, role string, want []etcdPerm) error {
	resp, err := cli.RoleGet(ctx, role)
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	for _, have := range resp.Perm {
		if !containsPerm(want, have) {
			if _, err := cli.RoleRevokePermission(ctx, role, string(have.Key), string(have.RangeEnd)); err != nil {
				return fmt.Errorf("revoke %q: %w", have.Key, err)
			}
		}
	}
	for _, p := range want {
		if _, err := cli.RoleGrantPermission(ctx, role, p.key, p.rangeEnd, p.perm); err != nil {
			return fmt.Errorf("grant %q: %w", p.key, err)
		}
	}
	return nil
}

func containsPerm(want []etcdPerm, have *authpb.Permission) bool {
	for _, p := range want {
		if p.key == string(have.Key) && bytes.Equal([]byte(p.rangeEnd), have.RangeEnd) && int32(p.perm) == int32(have.PermType) {
			return true
		}
	}
	return false
}
