package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/shardkv/shardkv/client"
	"github.com/shardkv/shardkv/group"
)

// clientFlags are the flags of every command that talks to a cluster.
type clientFlags struct {
	controllers string
	timeout     time.Duration
	maxKey      int
	maxValue    int
}

func (c *clientFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&c.controllers, "controllers", defaultControllers, "controller addresses, comma separated")
	cmd.Flags().DurationVar(&c.timeout, "timeout", 10*time.Second, "give up after this long")
	cmd.Flags().IntVar(&c.maxKey, "max-key-bytes", group.DefaultMaxKeySize, "the servers' key size limit, checked before sending")
	cmd.Flags().IntVar(&c.maxValue, "max-value-bytes", group.DefaultMaxValueSize, "the servers' value size limit, checked before sending")
}

func (c *clientFlags) connect(ctx context.Context) (*client.Client, error) {
	return client.New(ctx, splitList(c.controllers), client.WithLimits(c.maxKey, c.maxValue))
}

func newKVCmds() []*cobra.Command {
	var cf clientFlags
	run := func(fn func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), cf.timeout)
			defer cancel()
			c, err := cf.connect(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			return fn(ctx, c, cmd, args)
		}
	}
	value := func(cmd *cobra.Command, arg string) ([]byte, error) {
		if arg == "-" {
			// Read at most one byte past the limit: a huge stdin is refused
			// without being held in memory.
			v, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), int64(cf.maxValue)+1))
			if err == nil && len(v) > cf.maxValue {
				return nil, fmt.Errorf("%w: the value on stdin exceeds %d bytes", client.ErrValueTooLarge, cf.maxValue)
			}
			return v, err
		}
		return []byte(arg), nil
	}
	get := &cobra.Command{
		Use:   "get KEY",
		Short: "Print the value of a key (exit 1 if it does not exist)",
		Example: `  shardkv get greeting
  SHARDKV_CONTROLLERS=10.0.0.1:7100 shardkv get greeting`,
		Args: cobra.ExactArgs(1),
		RunE: run(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			v, found, err := c.Get(ctx, []byte(args[0]))
			if err != nil {
				return err
			}
			if !found {
				return &exitError{code: 1, err: fmt.Errorf("key %q not found", args[0])}
			}
			_, err = cmd.OutOrStdout().Write(append(v, '\n'))
			return err
		}),
	}
	put := &cobra.Command{
		Use:   "put KEY VALUE",
		Short: "Set a key (VALUE - reads the value from stdin)",
		Example: `  shardkv put greeting hello
  shardkv put config - < config.json`,
		Args: cobra.ExactArgs(2),
		RunE: run(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			v, err := value(cmd, args[1])
			if err != nil {
				return err
			}
			return c.Put(ctx, []byte(args[0]), v)
		}),
	}
	appendCmd := &cobra.Command{
		Use:     "append KEY VALUE",
		Short:   "Append to a key's value (VALUE - reads from stdin)",
		Example: `  shardkv append log "line 2"`,
		Args:    cobra.ExactArgs(2),
		RunE: run(func(ctx context.Context, c *client.Client, cmd *cobra.Command, args []string) error {
			v, err := value(cmd, args[1])
			if err != nil {
				return err
			}
			return c.Append(ctx, []byte(args[0]), v)
		}),
	}
	del := &cobra.Command{
		Use:     "delete KEY",
		Short:   "Delete a key (deleting a missing key succeeds)",
		Example: `  shardkv delete greeting`,
		Args:    cobra.ExactArgs(1),
		RunE: run(func(ctx context.Context, c *client.Client, _ *cobra.Command, args []string) error {
			return c.Delete(ctx, []byte(args[0]))
		}),
	}
	cmds := []*cobra.Command{get, put, appendCmd, del}
	for _, c := range cmds {
		cf.register(c)
	}
	return cmds
}
