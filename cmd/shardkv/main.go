// Command shardkv is the shardkv binary: the all-in-one dev cluster, the
// controller and group server processes, and the client and admin CLI.
package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// defaultControllers are where `shardkv dev` puts the controller.
const defaultControllers = "127.0.0.1:7100,127.0.0.1:7101,127.0.0.1:7102"

// defaultClusterToken names new clusters unless --cluster-token says
// otherwise (see storage.ClusterIDFor).
const defaultClusterToken = "shardkv"

type globals struct {
	logFormat string
	logLevel  string
}

func main() {
	root := newRoot()
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "shardkv:", oneLine(err))
		os.Exit(exitCode(err))
	}
}

// exitError carries a specific exit code (get's "not found" is 1 but not a
// failure worth a message of its own).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func exitCode(err error) int {
	if e, ok := err.(*exitError); ok {
		return e.code
	}
	return 1
}

func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", " ")
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "shardkv",
		Short: "A sharded, replicated, linearizable key/value store",
		Long: `shardkv is a sharded, replicated, linearizable key/value store.

Keys hash to shards; a replicated controller assigns shards to replica
groups; each group is a Raft group that serves its shards and hands them to
other groups when the configuration changes.`,
		Example: `  shardkv dev                      # a whole cluster in one process
  shardkv put greeting hello
  shardkv get greeting
  shardkv admin status`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return applyEnv(cmd)
		},
	}
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.AddCommand(newDevCmd(g), newControllerCmd(g), newServerCmd(g))
	root.AddCommand(newKVCmds()...)
	root.AddCommand(newAdminCmd(), newBenchCmd())
	return root
}

// applyEnv fills every flag not given on the command line from its
// environment variable: SHARDKV_ and the flag name in upper case with
// dashes as underscores (--data-dir is SHARDKV_DATA_DIR).
func applyEnv(cmd *cobra.Command) error {
	var err error
	set := func(f *pflag.Flag) {
		if f.Changed || err != nil {
			return
		}
		name := "SHARDKV_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("%s=%q: %w", name, v, e)
			}
		}
	}
	cmd.Flags().VisitAll(set)
	cmd.InheritedFlags().VisitAll(set)
	return err
}

func (g *globals) logger() (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", g.logLevel, err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch g.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", g.logFormat)
}
