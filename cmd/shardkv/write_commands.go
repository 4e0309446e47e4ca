package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/client"
)

// newWriteCmds are put, append and delete: each one call of the client on
// KEY (and VALUE), conditional with --if-version or --if-value.
func newWriteCmds() []*cobra.Command {
	return []*cobra.Command{
		newWriteCmd(&cobra.Command{
			Use:   "put KEY VALUE",
			Short: "Set a key (VALUE - reads the value from stdin)",
			Long: `Set a key's value. With VALUE -, the value is stdin's exact bytes (no
newline is added or removed), up to --max-value-bytes.

With --if-version N the key is set only if its version is N (0: only if it
does not exist); with --if-value V, only if its value is V. If the
condition does not hold, nothing is written, the key's version is printed
on stderr, and the exit code is 6.`,
			Example: `  shardkv put greeting hello
  shardkv put config - < config.json
  printf '\x00\x01' | shardkv put blob -
  shardkv put lock me --if-version 0       # create only: exit 6 if it exists
  v=$(shardkv get counter -o json | jq .version)
  shardkv put counter 8 --if-version "$v"  # compare-and-swap: exit 6 if it changed`,
		}, true, (*client.Client).Put),
		newWriteCmd(&cobra.Command{
			Use:   "append KEY VALUE",
			Short: "Append to a key's value (VALUE - reads from stdin)",
			Long: `Append to a key's value, creating the key if it does not exist. With
VALUE -, the appended bytes are stdin's, exactly. --if-version and
--if-value make it conditional, as for put (exit 6 if the condition does
not hold).`,
			Example: `  shardkv append log "line 2"
  date | shardkv append log -
  shardkv append log "line 3" --if-version 2   # exit 6 if the key's version is not 2`,
		}, true, (*client.Client).Append),
		newWriteCmd(&cobra.Command{
			Use:   "delete KEY",
			Short: "Delete a key (deleting a missing key succeeds)",
			Long: `Delete a key (deleting a missing key succeeds). --if-version and
--if-value make it conditional, as for put (exit 6 if the condition does
not hold).`,
			Example: `  shardkv delete greeting
  shardkv delete lock --if-value me   # release the lock only if still mine`,
		}, false, func(c *client.Client, ctx context.Context, key, _ []byte, opts ...client.WriteOption) (client.WriteResult, error) {
			return c.Delete(ctx, key, opts...)
		}),
	}
}

// newWriteCmd makes doc (its usage and help) a write command. It takes
// KEY, and VALUE too if withValue, and makes the write through a client
// limited by the write flags.
func newWriteCmd(doc *cobra.Command, withValue bool, write writeFunc) *cobra.Command {
	w := &writeFlags{}
	doc.Args = cobra.ExactArgs(1)
	if withValue {
		doc.Args = cobra.ExactArgs(2)
	}
	doc.RunE = w.run(write)
	w.register(doc.Flags(), withValue)
	return setExitCodes(doc, writeExitCodes)
}

// writeFlags are the flags of put, append and delete.
type writeFlags struct {
	cf        clusterFlags
	maxKey    int
	maxValue  int
	ifVersion uint64
	ifValue   string
}

func (w *writeFlags) register(f *pflag.FlagSet, values bool) {
	w.cf.register(f)
	f.IntVar(&w.maxKey, "max-key-bytes", kvpb.DefaultMaxKeySize, "the servers' key size limit, checked before sending")
	w.maxValue = kvpb.DefaultMaxValueSize
	if values {
		f.IntVar(&w.maxValue, "max-value-bytes", kvpb.DefaultMaxValueSize, "the servers' value size limit, checked before sending")
	}
	f.Uint64Var(&w.ifVersion, "if-version", 0, "write only if the key's version is `N` (0: the key does not exist); exit 6 if not")
	f.StringVar(&w.ifValue, "if-value", "", "write only if the key exists with value `V`; exit 6 if not")
}

// conditions returns the write options of the condition flags set.
func (w *writeFlags) conditions(f *pflag.FlagSet) ([]client.WriteOption, error) {
	switch ver, val := f.Changed("if-version"), f.Changed("if-value"); {
	case ver && val:
		return nil, usagef("--if-version and --if-value cannot be used together")
	case ver:
		return []client.WriteOption{client.IfVersion(w.ifVersion)}, nil
	case val:
		return []client.WriteOption{client.IfValue([]byte(w.ifValue))}, nil
	}
	return nil, nil
}

// writeFunc is a write of key (and value) by c.
type writeFunc func(c *client.Client, ctx context.Context, key, value []byte, opts ...client.WriteOption) (client.WriteResult, error)

// conditionFailed is the exit-6 error of a write whose condition did not
// hold.
func conditionFailed(key []byte, res client.WriteResult) error {
	state := fmt.Sprintf("its version is %d", res.Version)
	if res.Version == 0 {
		state = "it does not exist (version 0)"
	}
	return &exitError{code: exitCondition, err: fmt.Errorf("not written: the condition did not hold for key %q: %s", key, state)}
}

// run runs a write of args[0] (and args[1], the value, if given).
func (w *writeFlags) run(write writeFunc) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		opts, err := w.conditions(cmd.Flags())
		if err != nil {
			return err
		}
		var value []byte
		if len(args) > 1 {
			v, err := w.value(cmd.InOrStdin(), args[1])
			if err != nil {
				return err
			}
			value = v
		}
		return w.cf.run(cmd, func(ctx context.Context, addrs []string) error {
			c, err := client.New(ctx, addrs, w.cf.clientOption(), client.WithLimits(w.maxKey, w.maxValue))
			if err != nil {
				return err
			}
			defer c.Close()
			res, err := write(c, ctx, []byte(args[0]), value, opts...)
			if err == nil && !res.Succeeded {
				return conditionFailed([]byte(args[0]), res)
			}
			return err
		})
	}
}

// value is arg, or stdin's bytes for "-".
func (w *writeFlags) value(stdin io.Reader, arg string) ([]byte, error) {
	if arg != "-" {
		return []byte(arg), nil
	}
	// Read at most one byte past the limit: a huge stdin is refused
	// without being held in memory.
	v, err := io.ReadAll(io.LimitReader(stdin, int64(w.maxValue)+1))
	if err == nil && len(v) > w.maxValue {
		return nil, fmt.Errorf("%w: the value on stdin exceeds %d bytes", client.ErrValueTooLarge, w.maxValue)
	}
	return v, err
}
