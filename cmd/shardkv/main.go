// Command shardkv is the shardkv binary: the all-in-one dev cluster, the
// controller and group server processes, and the client and admin CLI.
//
// Every command lives in its own file, <command>_command.go (etcdctl's
// layout); what they share is here and in exit.go (exit codes), errors.go
// (errors as sentences), printer.go (the -o output formats) and connect.go
// (reaching the cluster).
package main

import (
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
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
	cmd, err := root.ExecuteC()
	if err != nil {
		fmt.Fprintln(os.Stderr, errorLine(cmd, err))
		os.Exit(exitCode(err))
	}
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "shardkv",
		Short: "A sharded, replicated, linearizable key/value store",
		Long: `shardkv is a sharded, replicated, linearizable key/value store.

Keys hash to shards; a replicated controller assigns shards to replica
groups; each group is a Raft group that serves its shards and hands them to
other groups when the configuration changes.

Every flag can also be set by an environment variable: SHARDKV_ and the
flag's name in capitals with _ for - (SHARDKV_CONTROLLERS, SHARDKV_DATA).`,
		Example: `  shardkv dev                      # a whole cluster in one process
  shardkv put greeting hello
  shardkv get greeting
  shardkv get greeting -o json     # base64 value and where it lives
  shardkv admin status`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd); err != nil {
				return usageError(err)
			}
			return nil
		},
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	root.AddCommand(newDevCmd(g), newControllerCmd(g), newServerCmd(g))
	root.AddCommand(newGetCmd(), newListCmd(), newWatchCmd())
	root.AddCommand(newWriteCmds()...)
	root.AddCommand(newAdminCmd(), newBenchCmd())
	setExitCodes(root, rootExitCodes)
	addBuiltinExamples(root)
	finishCommands(root)
	return root
}

// addBuiltinExamples creates cobra's help and completion commands now,
// to give them examples like every other command.
func addBuiltinExamples(root *cobra.Command) {
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		switch c.Name() {
		case "help":
			c.Example = "  shardkv help get\n  shardkv help admin join"
		case "completion":
			c.Example = "  shardkv completion bash > /etc/bash_completion.d/shardkv\n  source <(shardkv completion zsh)"
			for _, shell := range c.Commands() {
				shell.Example = fmt.Sprintf("  shardkv completion %[1]s > shardkv.%[1]s", shell.Name())
			}
		}
	}
}

// finishCommands gives every command what they all share: flag and
// argument errors are usage errors (exit 2), and --help ends with the exit
// codes.
func finishCommands(root *cobra.Command) {
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError(err) })
	root.SetUsageTemplate(root.UsageTemplate() + exitCodesTemplate)
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Args != nil {
			args := c.Args
			c.Args = func(cmd *cobra.Command, a []string) error {
				if err := args(cmd, a); err != nil {
					return usageError(err)
				}
				return nil
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
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
		return nil, usagef("--log-level %q: want debug, info, warn or error", g.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch g.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, usagef("--log-format %q: want text or json", g.logFormat)
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// serverGCPercent is the garbage collector's target for server processes
// (controller, server, dev) when GOGC is not set: a replica's live Go heap
// is small (Pebble's block cache lives outside it), so twice Go's default
// headroom costs tens of MiB and saves about 7% CPU per write (measured in
// docs/benchmarks.md). GOGC in the environment wins.
const serverGCPercent = 200

func tuneServerGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(serverGCPercent)
	}
}
