package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/client"
)

func newListCmd() *cobra.Command {
	lf := &listFlags{}
	cmd := &cobra.Command{
		Use:   "list [START [END]]",
		Short: "List the keys in [START, END), in byte order",
		Long: `List the keys from START (inclusive; none: from the first key) up to
END (exclusive; no END: to the last key), in byte order, from every shard.
Each group's keys are read at one linearizable point; the listing is not
one snapshot of the whole store (see the README's Guarantees).

At most --limit keys are listed (0: all of them). When keys remain, the
table ends with the cursor on stderr and -o json gives it as "next": list
the next page with --after NEXT. A key is never listed twice through pages,
and every key that exists throughout is listed once, even while shards
move.

Output (-o):
  table  one key a line (with --values: KEY, VERSION and VALUE columns;
         keys and values that are not printable text are quoted)
  json   {"kvs": [{"key", "value" (both base64; value with --values),
         "version" (with --values)}], "count", "more", "next" (base64: the
         last key listed, to pass to --after; null when nothing remains)}`,
		Example: `  shardkv list a b                  # the keys from a up to b, excluded
  shardkv list user/ --limit 100    # 100 keys from user/ on
  shardkv list user/ user0 --limit 100 --after user/0412   # the page after user/0412
  shardkv list --values             # every key, with its value and version
  next=$(shardkv list a b --limit 100 -o json | jq -r '.next // empty' | base64 -d)`,
		Args: cobra.RangeArgs(0, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var start, end []byte
			if len(args) > 0 {
				start = []byte(args[0])
			}
			if len(args) == 2 {
				end = []byte(args[1])
			}
			return lf.run(cmd, client.WithRange(start, end))
		},
	}
	lf.register(cmd.Flags(), 1000, formatTable, formatJSON)
	cmd.Flags().BoolVar(&lf.values, "values", false, "list values and versions too (otherwise the servers do not read them)")
	return setExitCodes(cmd, clientExitCodes)
}

// listFlags are the flags of list and get --prefix.
type listFlags struct {
	cf     clusterFlags
	maxKey int
	limit  int
	after  string
	values bool // list values and versions too
	out    *printer
}

// register adds the flags to f: --limit's default is limit, and -o offers
// formats (the first is the default).
func (lf *listFlags) register(f *pflag.FlagSet, limit int, formats ...string) {
	lf.cf.register(f)
	f.IntVar(&lf.maxKey, "max-key-bytes", kvpb.DefaultMaxKeySize, "the servers' key size limit, checked before sending")
	f.IntVar(&lf.limit, "limit", limit, "list at most this many keys (0: all)")
	f.StringVar(&lf.after, "after", "", "list only keys after this one: a previous listing's next")
	lf.out = newPrinter(f, formats...)
}

// run lists the keys of rng.
func (lf *listFlags) run(cmd *cobra.Command, rng client.ListOption) error {
	if err := lf.out.check(); err != nil {
		return err
	}
	if lf.limit < 0 {
		return usagef("--limit %d: want 0 (all) or more", lf.limit)
	}
	return lf.cf.run(cmd, func(ctx context.Context, addrs []string) error {
		c, err := client.New(ctx, addrs, lf.cf.clientOption(), client.WithLimits(lf.maxKey, kvpb.DefaultMaxValueSize))
		if err != nil {
			return err
		}
		defer c.Close()
		v, err := list(ctx, c, lf.limit, []byte(lf.after), lf.values, rng)
		if err != nil {
			return err
		}
		if err := lf.out.print(cmd.OutOrStdout(), v); err != nil {
			return err
		}
		if v.More && lf.out.format == formatTable {
			fmt.Fprintf(cmd.ErrOrStderr(), "more keys follow: the next page is --after %s\n", shellQuote(v.Next))
		}
		return nil
	})
}

// list lists rng page by page, after the cursor after, until limit keys
// (0: all of them).
func list(ctx context.Context, c *client.Client, limit int, after []byte, values bool, rng client.ListOption) (listView, error) {
	opts := []client.ListOption{rng}
	if !values {
		opts = append(opts, client.WithKeysOnly())
	}
	v := listView{Values: values, KVs: []client.KeyValue{}}
	for {
		pageLimit := client.DefaultListLimit
		if limit > 0 {
			pageLimit = min(pageLimit, limit-len(v.KVs))
		}
		page, err := c.List(ctx, append(opts, client.WithLimit(pageLimit), client.After(after))...)
		if err != nil {
			return listView{}, err
		}
		v.KVs = append(v.KVs, page.KVs...)
		if len(page.KVs) > 0 {
			after = page.Next
		}
		if !page.More || (limit > 0 && len(v.KVs) >= limit) {
			if page.More {
				v.More, v.Next = true, after
			}
			return v, nil
		}
	}
}

// listView is list's (and get --prefix's) output.
type listView struct {
	Values bool
	KVs    []client.KeyValue
	More   bool
	Next   []byte
}

func (v listView) writeTable(w io.Writer) error {
	if !v.Values {
		for _, kv := range v.KVs {
			if _, err := fmt.Fprintln(w, printable(kv.Key)); err != nil {
				return err
			}
		}
		return nil
	}
	tw := newTable(w, "KEY", "VERSION", "VALUE")
	for _, kv := range v.KVs {
		fmt.Fprintf(tw, "%s\t%d\t%s\n", printable(kv.Key), kv.Version, printable(kv.Value))
	}
	return tw.Flush()
}

// listedKey is one key of list's JSON.
type listedKey struct {
	Key     []byte  `json:"key"`
	Value   []byte  `json:"value,omitempty"`
	Version *uint64 `json:"version,omitempty"`
}

func (v listView) jsonValue() any {
	out := struct {
		KVs   []listedKey `json:"kvs"`
		Count int         `json:"count"`
		More  bool        `json:"more"`
		Next  []byte      `json:"next"`
	}{KVs: []listedKey{}, Count: len(v.KVs), More: v.More, Next: v.Next}
	for _, kv := range v.KVs {
		k := listedKey{Key: kv.Key}
		if v.Values {
			k.Value = kv.Value
			if k.Value == nil {
				k.Value = []byte{}
			}
			k.Version = &kv.Version
		}
		out.KVs = append(out.KVs, k)
	}
	return out
}

// printable returns b as it is when it is printable text, and quoted (Go
// syntax) when it is empty, holds anything else (tabs, line breaks, bytes
// that are not UTF-8) or starts with a quote, so that a table keeps one key
// a line and says what it holds.
func printable(b []byte) string {
	s := string(b)
	if s == "" || s[0] == '"' || !utf8.ValidString(s) || strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return strconv.Quote(s)
	}
	return s
}

// shellQuote quotes b for a POSIX shell.
func shellQuote(b []byte) string {
	return "'" + strings.ReplaceAll(string(b), "'", `'\''`) + "'"
}
