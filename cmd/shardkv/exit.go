package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/client"
	"github.com/shardkv/shardkv/controller/ctlclient"
	"github.com/shardkv/shardkv/internal/memberclient"
	"github.com/shardkv/shardkv/storage"
)

// Exit codes, the same for every command (grep's convention for 0, 1 and
// 2). --help of each command lists those it uses, and so does the README.
const (
	exitOK          = 0 // success
	exitNotFound    = 1 // get: no such key; admin config N: no such configuration
	exitUsage       = 2 // a bad flag or argument
	exitUnavailable = 3 // the cluster could not be reached, or did not answer within --timeout
	exitFailed      = 4 // the cluster refused the request, or another error
	exitStorage     = 5 // a server's disk cannot persist (full or stalled)
	exitCondition   = 6 // put, append, delete: --if-version or --if-value did not hold; nothing was written
)

// The exit codes as --help shows them.
const (
	codeOK          = "  0  success\n"
	codeNotFoundKey = "  1  the key does not exist (nothing on stdout, except with -o json)\n"
	codeNotFoundCfg = "  1  the configuration does not exist\n"
	codeUsage       = "  2  usage error: a bad flag or argument, or --controllers naming something other than the controllers\n"
	codeUnavailable = "  3  the controllers cannot be reached (within 2s) or the cluster did not answer within --timeout;\n" +
		"     the outcome of a write or admin change is then unknown: applied once or not at all\n"
	codeFailed    = "  4  the cluster refused the request (too large, no such group, ...), or another error\n"
	codeCondition = "  6  --if-version or --if-value did not hold: nothing was written (the key's version is on stderr)\n"

	rootExitCodes = codeOK +
		"  1  not found: get's key, or admin config's configuration\n" + codeUsage + codeUnavailable + codeFailed +
		"  5  dev, controller, server: the disk cannot persist (full, or a write stalled)\n" +
		"  6  put, append, delete: --if-version or --if-value did not hold; nothing was written\n" +
		"130  dev, controller, server: a second SIGINT or SIGTERM while stopping (exits at once)\n"
	clientExitCodes  = codeOK + codeUsage + codeUnavailable + codeFailed
	writeExitCodes   = clientExitCodes + codeCondition
	getExitCodes     = codeOK + codeNotFoundKey + codeUsage + codeUnavailable + codeFailed
	configExitCodes  = codeOK + codeNotFoundCfg + codeUsage + codeUnavailable + codeFailed
	processExitCodes = "  0  stopped by SIGINT or SIGTERM\n" + "  2  usage error: a bad flag or argument\n" +
		"  3  timed out starting: the controllers or the other replicas did not answer\n" +
		"  4  could not start, or stopped on an error (data directory locked, port in use, identity refused, ...)\n" +
		"  5  the disk cannot persist (full, or a write stalled): nothing acknowledged is lost; restart once it is fixed\n" +
		"130  a second SIGINT or SIGTERM while stopping: exits at once (nothing acknowledged is lost)\n"
)

// exitCodesTemplate ends every command's --help.
const exitCodesTemplate = `{{with exitCodes .}}
Exit codes:
{{.}}{{end}}`

func init() {
	cobra.AddTemplateFunc("exitCodes", func(c *cobra.Command) string {
		for ; c != nil; c = c.Parent() {
			if s, ok := c.Annotations["exit-codes"]; ok {
				return s
			}
		}
		return ""
	})
}

// setExitCodes records the exit codes --help of cmd (and of its
// subcommands without their own) lists.
func setExitCodes(cmd *cobra.Command, codes string) *cobra.Command {
	if cmd.Annotations == nil {
		cmd.Annotations = map[string]string{}
	}
	cmd.Annotations["exit-codes"] = codes
	return cmd
}

// exitError ends the process with a given code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// processCommand makes cmd, which runs a process hosting replicas (dev,
// controller, server), list processExitCodes in --help and end with
// exitStorage when its storage failed, whether the failure ended the
// process at once (storage.Options.OnFatal, OnStuck) or came back as an
// error (a replica stopped by a failed write, an engine that cannot open
// on a full disk). Client commands keep exitFailed for the same errors:
// there it is a server's disk, and the request was refused.
func processCommand(cmd *cobra.Command) *cobra.Command {
	run := cmd.RunE
	cmd.RunE = func(c *cobra.Command, args []string) error {
		err := run(c, args)
		var ee *exitError
		storageFailed := errors.Is(err, rpcerr.ErrNoSpace) || errors.Is(err, rpcerr.ErrStalled) || errors.Is(err, storage.ErrCannotPersist)
		if storageFailed && !errors.As(err, &ee) { // a code chosen already stands
			return &exitError{code: exitStorage, err: err}
		}
		return err
	}
	return setExitCodes(cmd, processExitCodes)
}

// usageError marks err as a mistake in the command line (exit 2).
func usageError(err error) error { return &exitError{code: exitUsage, err: err} }

// usagef is a usage error with a formatted message.
func usagef(format string, args ...any) error { return usageError(fmt.Errorf(format, args...)) }

// notFound is get's and admin config's "does not exist" (exit 1).
func notFound(format string, args ...any) error {
	return &exitError{code: exitNotFound, err: fmt.Errorf(format, args...)}
}

// exitCode maps a command's error to the process's exit code.
func exitCode(err error) int {
	var ee *exitError
	var unreachable *unreachableError
	var timeout *timeoutError
	var notCtl *notControllerError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &notCtl), errors.Is(err, memberclient.ErrNotANode):
		return exitUsage
	case errors.As(err, &unreachable), errors.As(err, &timeout),
		errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, client.ErrUnknownOutcome), errors.Is(err, ctlclient.ErrUnknownOutcome):
		return exitUnavailable
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return exitUnavailable
	}
	return exitFailed
}

// errorLine is the one line printed on stderr for a failed command.
func errorLine(cmd *cobra.Command, err error) string {
	line := "shardkv: " + describe(err)
	if exitCode(err) == exitUsage && cmd != nil {
		line += fmt.Sprintf(" (see '%s --help')", cmd.CommandPath())
	}
	return strings.ReplaceAll(line, "\n", " ")
}
