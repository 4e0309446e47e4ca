package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"
	"google.golang.org/grpc"

	"github.com/shardkv/shardkv/controller/ctlclient"
)

// credentialFlags are the auth flags of the commands that talk to a
// cluster: --user with --password (or SHARDKV_PASSWORD, or a prompt that
// does not echo), or --token. The password is never printed or logged.
type credentialFlags struct {
	user, password, token string
}

func (c *credentialFlags) register(f *pflag.FlagSet) {
	f.StringVar(&c.user, "user", "", "auth: authenticate as this user (its password from --password, SHARDKV_PASSWORD, or a prompt); needs TLS")
	f.StringVar(&c.password, "password", "", "auth: the password of --user (prefer SHARDKV_PASSWORD or the prompt: a flag shows in the process list)")
	f.StringVar(&c.token, "token", "", "auth: a token from 'shardkv admin auth token', instead of --user; needs TLS")
}

// credentials returns the per-call credentials the flags ask for (nil:
// none), authenticating at the controllers addrs over dial (the TLS
// options). --user and --token together, or a missing password that
// cannot be prompted for, are usage errors.
func (c *credentialFlags) credentials(cmd *cobra.Command, addrs []string, dial []grpc.DialOption) (*ctlclient.Credentials, error) {
	switch {
	case c.user != "" && c.token != "":
		return nil, usagef("--user and --token exclude each other")
	case c.token != "":
		return ctlclient.TokenCredentials(c.token), nil
	case c.user == "":
		if c.password != "" {
			return nil, usagef("--password needs --user")
		}
		return nil, nil
	}
	password := c.password
	if password == "" {
		var err error
		if password, err = promptPassword(cmd, fmt.Sprintf("password of %s: ", c.user)); err != nil {
			return nil, err
		}
	}
	return ctlclient.NewCredentials(addrs, c.user, password, dial...)
}

// promptPassword reads a password from the terminal without echoing it;
// without a terminal it is a usage error naming the other ways.
func promptPassword(cmd *cobra.Command, prompt string) (string, error) {
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return "", usagef("no password: give --password or SHARDKV_PASSWORD (stdin is not a terminal to prompt on)")
	}
	fmt.Fprint(cmd.ErrOrStderr(), prompt)
	pw, err := term.ReadPassword(fd)
	fmt.Fprintln(cmd.ErrOrStderr())
	if err != nil {
		return "", fmt.Errorf("read the password: %w", err)
	}
	return string(pw), nil
}
