package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/pflag"
)

// The output formats of -o: every command that prints offers table (the
// default, for people) and json (for programs); get also offers raw.
const (
	formatTable = "table"
	formatJSON  = "json"
	formatRaw   = "raw"
)

// view is what a command prints: one value, in every format it offers.
type view interface {
	// writeTable writes the view for people.
	writeTable(w io.Writer) error
	// jsonValue is what -o json encodes.
	jsonValue() any
}

// rawView is a view with a raw form (-o raw): exact bytes, nothing added.
type rawView interface {
	view
	writeRaw(w io.Writer) error
}

// printer is the -o flag of a command and prints its views.
type printer struct {
	format  string
	formats []string
}

// newPrinter registers -o on f; formats[0] is the default.
func newPrinter(f *pflag.FlagSet, formats ...string) *printer {
	p := &printer{formats: formats}
	f.StringVarP(&p.format, "output", "o", formats[0], "output format: "+strings.Join(formats, ", "))
	return p
}

// check refuses a format the command does not offer (a usage error).
func (p *printer) check() error {
	if !slices.Contains(p.formats, p.format) {
		return usagef("-o %q: want %s", p.format, strings.Join(p.formats, " or "))
	}
	return nil
}

// print writes v in the chosen format.
func (p *printer) print(w io.Writer, v view) error {
	if err := p.check(); err != nil {
		return err
	}
	switch p.format {
	case formatJSON:
		return writeJSON(w, v.jsonValue())
	case formatRaw:
		if r, ok := v.(rawView); ok {
			return r.writeRaw(w)
		}
	}
	return v.writeTable(w)
}

// newTable starts a table for people on w: the header's columns, then the
// rows the caller writes, each a line of tab-separated cells, aligned two
// spaces apart once the caller flushes it.
func newTable(w io.Writer, header ...string) *tabwriter.Writer {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	return tw
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// shardRanges writes shard numbers as ranges: 0-15, 48. The input need
// not be sorted.
func shardRanges(shards []int) string {
	s := slices.Clone(shards)
	slices.Sort(s)
	s = slices.Compact(s)
	var parts []string
	for i := 0; i < len(s); {
		j := i
		for j+1 < len(s) && s[j+1] == s[j]+1 {
			j++
		}
		if j == i {
			parts = append(parts, strconv.Itoa(s[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", s[i], s[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ", ")
}
