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
// KEY (and VALUE).
func newWriteCmds() []*cobra.Command {
	return []*cobra.Command{
		newWriteCmd(&cobra.Command{
			Use:   "put KEY VALUE",
			Short: "Set a key (VALUE - reads the value from stdin)",
			Long: `Set a key's value. With VALUE -, the value is stdin's exact bytes (no
newline is added or removed), up to --max-value-bytes.`,
			Example: `  shardkv put greeting hello
  shardkv put config - < config.json
  printf '\x00\x01' | shardkv put blob -`,
		}, true, (*client.Client).Put),
		newWriteCmd(&cobra.Command{
			Use:   "append KEY VALUE",
			Short: "Append to a key's value (VALUE - reads from stdin)",
			Long: `Append to a key's value, creating the key if it does not exist. With
VALUE -, the appended bytes are stdin's, exactly.`,
			Example: `  shardkv append log "line 2"
  date | shardkv append log -`,
		}, true, (*client.Client).Append),
		newWriteCmd(&cobra.Command{
			Use:     "delete KEY",
			Short:   "Delete a key (deleting a missing key succeeds)",
			Example: `  shardkv delete greeting`,
		}, false, func(c *client.Client, ctx context.Context, key, _ []byte) error {
			return c.Delete(ctx, key)
		}),
	}
}

// writeCall is a write of key (and value) through c.
type writeCall func(c *client.Client, ctx context.Context, key, value []byte) error

// newWriteCmd makes doc (its usage and help) a write command. It takes
// KEY, and VALUE too if withValue, and makes the write through a client
// limited by the write flags.
func newWriteCmd(doc *cobra.Command, withValue bool, write writeCall) *cobra.Command {
	w := &writeFlags{}
	doc.Args = cobra.ExactArgs(1)
	if withValue {
		doc.Args = cobra.ExactArgs(2)
	}
	doc.RunE = w.run(write)
	w.register(doc.Flags(), withValue)
	return setExitCodes(doc, clientExitCodes)
}

// writeFlags are the flags of put, append and delete.
type writeFlags struct {
	cf       clusterFlags
	maxKey   int
	maxValue int
}

func (w *writeFlags) register(f *pflag.FlagSet, values bool) {
	w.cf.register(f)
	f.IntVar(&w.maxKey, "max-key-bytes", kvpb.DefaultMaxKeySize, "the servers' key size limit, checked before sending")
	w.maxValue = kvpb.DefaultMaxValueSize
	if values {
		f.IntVar(&w.maxValue, "max-value-bytes", kvpb.DefaultMaxValueSize, "the servers' value size limit, checked before sending")
	}
}

// run runs a write of args[0] (and args[1], the value, if given).
func (w *writeFlags) run(write writeCall) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		var value []byte
		if len(args) > 1 {
			v, err := w.value(cmd.InOrStdin(), args[1])
			if err != nil {
				return err
			}
			value = v
		}
		return w.cf.run(cmd, func(ctx context.Context, addrs []string) error {
			c, err := client.New(ctx, addrs, client.WithLimits(w.maxKey, w.maxValue))
			if err != nil {
				return err
			}
			defer c.Close()
			return write(c, ctx, []byte(args[0]), value)
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
