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
listed are revoked). Connects with the etcd certificate in --tls-dir.`

func newEtcdSetupCmd(e env) *cobra.Command {
	var etcd, cluster, tlsDir string
	var timeout time.Duration
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
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			clusters := splitList(cluster)
			if err := embedded.SetupEtcdAuth(ctx, cli, clusters...); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "etcd auth is on; users coordinator and worker set up for clusters %v\n", clusters)
			return nil
		},
	}
	fs := cmd.Flags()
	addEtcdClusterFlags(fs, &etcd, &cluster)
	addTLSDirFlag(fs, &tlsDir, "an etcd certificate, which administers etcd")
	fs.DurationVar(&timeout, "timeout", 30*time.Second, "how long to try")
	return cmd
}
