package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/shardkv/shardkv/controller/ctlclient"
)

// adminFlags are the flags every admin command shares.
type adminFlags struct {
	cf  clusterFlags
	out *printer
}

func newAdminCmd() *cobra.Command {
	a := &adminFlags{}
	admin := &cobra.Command{
		Use:   "admin",
		Short: "Change and inspect the cluster's configuration",
		Example: `  shardkv admin status
  shardkv admin join 4=127.0.0.1:7200,127.0.0.1:7201,127.0.0.1:7202
  shardkv admin leave 4
  shardkv admin move 17 2
  shardkv admin config 3 -o json
  shardkv admin member list 1
  shardkv admin backup ./backup-1
  shardkv admin auth status`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	a.cf.register(admin.PersistentFlags())
	a.out = newPrinter(admin.PersistentFlags(), formatTable, formatJSON)
	admin.AddCommand(newAdminJoinCmd(a), newAdminLeaveCmd(a), newAdminMoveCmd(a), newAdminConfigCmd(a), newAdminStatusCmd(a),
		newAdminMemberCmd(a), newAdminBackupCmd(a), newAdminAuthCmd(a))
	return setExitCodes(admin, clientExitCodes)
}

// controllerCall is what an admin command asks of the controller: the
// view to print, or the error its exit code tells.
type controllerCall func(ctx context.Context, ctl *ctlclient.Client) (view, error)

// command makes doc (its usage, help and Args) an admin command that
// documents the exit codes codes. parse checks the arguments, a usage
// error connecting to nothing, and returns the call to make; its view is
// printed in the -o format.
func (a *adminFlags) command(doc *cobra.Command, codes string, parse func(cmd *cobra.Command, args []string) (controllerCall, error)) *cobra.Command {
	doc.RunE = func(cmd *cobra.Command, args []string) error {
		call, err := parse(cmd, args)
		if err != nil {
			return err
		}
		return a.run(cmd, call)
	}
	return setExitCodes(doc, codes)
}

// run calls fn with a controller client and prints the view it returns.
func (a *adminFlags) run(cmd *cobra.Command, fn controllerCall) error {
	if err := a.out.check(); err != nil {
		return err
	}
	return a.cf.run(cmd, func(ctx context.Context, addrs []string) error {
		ctl, err := ctlclient.New(addrs, a.cf.dial()...)
		if err != nil {
			return err
		}
		defer ctl.Close()
		v, err := fn(ctx, ctl)
		if err != nil {
			return err
		}
		return a.out.print(cmd.OutOrStdout(), v)
	})
}
