package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/modcoord/modcoord/embedded"
	"github.com/modcoord/modcoord/pki"
)

const etcdSetupLong = `Create modcoord's etcd users and roles and turn etcd auth on, for an etcd
that requires client certificates from the cluster CA. Users are the roles
(etcd takes a certificate's CommonName as the user name):
  coordinator  read and write /modcoord/<cluster>/
  worker       read /modcoord/<cluster>/assignments/, read and write
               /modcoord/<cluster>/workers/
  etcd, root   the root role (etcd's own certificate administers etcd)
Certificates of other roles get no etcd access. Safe to run again; list
every cluster name the etcd serves each time (permissions of clusters not
listed are revoked). Connects with the etcd certificate in --tls-dir.

--wait is for a sidecar container next to etcd (the Helm chart runs it so):
it tries again, every few seconds, until the setup succeeds, then keeps
running until SIGTERM or SIGINT and exits 0, so a pod whose containers are
always restarted neither fails nor loops.`

// etcdSetupRetry is the pause between etcd-setup --wait attempts.
var etcdSetupRetry = 3 * time.Second

func newEtcdSetupCmd(e env) *cobra.Command {
	var etcd, cluster, tlsDir string
	var timeout time.Duration
	var wait bool
	cmd := &cobra.Command{
		Use:   "etcd-setup --tls-dir DIR --etcd URLS --cluster NAME[,NAME]",
		Short: "Set up etcd users, roles and auth for modcoord",
		Long:  etcdSetupLong,
		Args:  positional(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if tlsDir == "" {
				return usageErrorf("--tls-dir: give a directory with ca.crt and an etcd certificate")
			}
			creds, err := loadTLSDir(tlsDir, pki.RoleEtcd)
			if err != nil {
				return err
			}
			cli, err := newEtcdClient(etcd, creds)
			if err != nil {
				return err
			}
			defer cli.Close()
			clusters := splitList(cluster)
			setup := func() error {
				ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
				defer cancel()
				return embedded.SetupEtcdAuth(ctx, cli, clusters...)
			}
			err = setup()
			for wait && err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "etcd-setup: %v; trying again in %s\n", err, etcdSetupRetry)
				select {
				case <-cmd.Context().Done():
					return err
				case <-time.After(etcdSetupRetry):
				}
				err = setup()
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "etcd auth is on; users coordinator and worker set up for clusters %v\n", clusters)
			if wait {
				// A sidecar: stay up until the pod stops, then exit 0.
				<-cmd.Context().Done()
			}
			return nil
		},
	}
	fs := cmd.Flags()
	addEtcdClusterFlags(fs, &etcd, &cluster)
	addTLSDirFlag(fs, &tlsDir, "an etcd certificate, which administers etcd")
	fs.DurationVar(&timeout, "timeout", 30*time.Second, "how long to try (with --wait: each attempt)")
	fs.BoolVar(&wait, "wait", false, "retry until the setup succeeds, then keep running until SIGTERM and exit 0 (a sidecar next to etcd)")
	return cmd
}
