package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/controller/ctlclient"
	"github.com/shardkv/shardkv/internal/auth"
)

// The auth commands: enable, disable and status; users (add, delete,
// passwd, grant-role, revoke-role, list); roles (add, delete, grant,
// revoke, list); and token. Every change prints the auth revision after
// it (an authChangeView); once auth is enabled, each needs --user (or
// --token) of a user with the admin role.

// authChangeView is the outcome of one auth change.
type authChangeView struct {
	what     string
	revision uint64
}

func (v authChangeView) jsonValue() any {
	return map[string]any{"change": v.what, "revision": v.revision}
}

func (v authChangeView) writeTable(w io.Writer) error {
	_, err := fmt.Fprintf(w, "%s (auth revision %d)\n", v.what, v.revision)
	return err
}

// authStateView is the public auth state, shown as status, users or roles.
type authStateView struct {
	state *controllerpb.AuthStateReply
	show  string // "status", "users" or "roles"
}

type permissionOut struct {
	Prefix string `json:"prefix"`
	Access string `json:"access"`
}

func (v authStateView) jsonValue() any {
	users := []map[string]any{}
	for _, u := range v.state.GetUsers() {
		users = append(users, map[string]any{"name": u.GetName(), "roles": append([]string{}, u.GetRoles()...), "cert_cn": u.GetCertCn()})
	}
	roles := []map[string]any{}
	for _, r := range v.state.GetRoles() {
		perms := []permissionOut{}
		for _, p := range r.GetPermissions() {
			perms = append(perms, permissionOut{Prefix: string(p.GetPrefix()), Access: auth.FormatAccess(p.GetAccess())})
		}
		roles = append(roles, map[string]any{"name": r.GetName(), "permissions": perms})
	}
	switch v.show {
	case "users":
		return users
	case "roles":
		return roles
	}
	return map[string]any{"enabled": v.state.GetEnabled(), "revision": v.state.GetRevision(), "users": len(users), "roles": len(roles)}
}

func (v authStateView) writeTable(w io.Writer) error {
	switch v.show {
	case "users":
		tw := newTable(w, "USER", "ROLES", "CERT CN")
		for _, u := range v.state.GetUsers() {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", u.GetName(), strings.Join(u.GetRoles(), ","), u.GetCertCn())
		}
		return tw.Flush()
	case "roles":
		tw := newTable(w, "ROLE", "ACCESS", "PREFIX")
		fmt.Fprintf(tw, "%s\t%s\t%s\n", auth.AdminRole, "everything", "(built in)")
		for _, r := range v.state.GetRoles() {
			if len(r.GetPermissions()) == 0 {
				fmt.Fprintf(tw, "%s\t-\t-\n", r.GetName())
			}
			for _, p := range r.GetPermissions() {
				fmt.Fprintf(tw, "%s\t%s\t%q\n", r.GetName(), auth.FormatAccess(p.GetAccess()), p.GetPrefix())
			}
		}
		return tw.Flush()
	}
	state := "disabled"
	if v.state.GetEnabled() {
		state = "enabled"
	}
	_, err := fmt.Fprintf(w, "auth %s (revision %d, %d users, %d roles)\n", state, v.state.GetRevision(), len(v.state.GetUsers()), len(v.state.GetRoles()))
	return err
}

// tokenView is a token and its expiry.
type tokenView struct {
	token   string
	expires time.Time
}

func (v tokenView) jsonValue() any {
	return map[string]any{"token": v.token, "expires": v.expires.UTC().Format(time.RFC3339)}
}

func (v tokenView) writeTable(w io.Writer) error {
	_, err := fmt.Fprintln(w, v.token)
	return err
}

func newAdminAuthCmd(a *adminFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "auth",
		Short: "Users, roles, and whether auth is enabled",
		Long: `Manage authentication and authorization. Auth is off until enabled; once on,
every request needs a user's credentials (--user and its password, --token,
or a client certificate whose common name a user names) and is refused
unless the user's roles allow it: read or write on key prefixes, or the
built-in role admin, needed by join, leave, move, membership, backup and
every auth change. Enabling needs TLS with --client-cert-auth on every
replica, and a user with the admin role.`,
		Example: `  shardkv admin auth user add root              # prompts for the password
  shardkv admin auth user grant-role root admin
  shardkv admin auth role add app
  shardkv admin auth role grant app readwrite app/
  shardkv admin auth user add svc --cert-cn svc.example.com --no-password
  shardkv admin auth user grant-role svc app
  shardkv admin auth enable
  shardkv --user root admin auth status         # SHARDKV_PASSWORD, or a prompt`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	change := func(what string, req *controllerpb.AuthChangeRequest) controllerCall {
		return func(ctx context.Context, ctl *ctlclient.Client) (view, error) {
			rev, err := ctl.AuthChange(ctx, req)
			return authChangeView{what: what, revision: rev}, err
		}
	}
	state := func(show string) controllerCall {
		return func(ctx context.Context, ctl *ctlclient.Client) (view, error) {
			st, err := ctl.AuthState(ctx, 0, false)
			return authStateView{state: st, show: show}, err
		}
	}
	enable := a.command(&cobra.Command{Use: "enable", Short: "Turn auth on (needs a user with the admin role, and TLS with --client-cert-auth)", Args: cobra.NoArgs},
		clientExitCodes, func(*cobra.Command, []string) (controllerCall, error) {
			return change("auth enabled", &controllerpb.AuthChangeRequest{Op: &controllerpb.AuthChangeRequest_Enable{Enable: &controllerpb.AuthEnable{}}}), nil
		})
	disable := a.command(&cobra.Command{Use: "disable", Short: "Turn auth off: every caller may do everything", Args: cobra.NoArgs},
		clientExitCodes, func(*cobra.Command, []string) (controllerCall, error) {
			return change("auth disabled", &controllerpb.AuthChangeRequest{Op: &controllerpb.AuthChangeRequest_Disable{Disable: &controllerpb.AuthDisable{}}}), nil
		})
	status := a.command(&cobra.Command{Use: "status", Short: "Whether auth is enabled, its revision, how many users and roles", Args: cobra.NoArgs},
		clientExitCodes, func(*cobra.Command, []string) (controllerCall, error) { return state("status"), nil })
	token := a.command(&cobra.Command{Use: "token", Short: "Authenticate as --user and print a token (for --token and client.WithToken)", Args: cobra.NoArgs},
		clientExitCodes, func(*cobra.Command, []string) (controllerCall, error) {
			if a.cf.creds.user == "" {
				return nil, usagef("give --user (and its password) to authenticate as")
			}
			return func(ctx context.Context, _ *ctlclient.Client) (view, error) {
				tok, expires, err := a.cf.active.Token(ctx)
				return tokenView{token: tok, expires: expires}, err
			}, nil
		})
	cmd.AddCommand(enable, disable, status, token, newAdminAuthUserCmd(a, change, state), newAdminAuthRoleCmd(a, change, state))
	return cmd
}

func newAdminAuthUserCmd(a *adminFlags, change func(string, *controllerpb.AuthChangeRequest) controllerCall, state func(string) controllerCall) *cobra.Command {
	cmd := &cobra.Command{Use: "user", Short: "Add, delete and list users; change passwords and roles", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() }}
	var certCN, newPassword string
	var noPassword bool
	add := a.command(&cobra.Command{Use: "add NAME", Short: "Add a user (its password from --new-password, SHARDKV_NEW_PASSWORD or a prompt)", Args: cobra.ExactArgs(1)},
		clientExitCodes, func(cmd *cobra.Command, args []string) (controllerCall, error) {
			req := &controllerpb.UserAdd{Name: args[0], CertCn: certCN}
			if !noPassword {
				pw, err := newPasswordOf(cmd, args[0], newPassword)
				if err != nil {
					return nil, err
				}
				req.Password = pw
			} else if certCN == "" {
				return nil, usagef("--no-password needs --cert-cn: the user must authenticate somehow")
			}
			return change("user "+args[0]+" added", &controllerpb.AuthChangeRequest{Op: &controllerpb.AuthChangeRequest_UserAdd{UserAdd: req}}), nil
		})
	add.Flags().StringVar(&certCN, "cert-cn", "", "a client certificate with this common name authenticates as the user, with no password")
	add.Flags().BoolVar(&noPassword, "no-password", false, "no password: the user authenticates by --cert-cn only")
	add.Flags().StringVar(&newPassword, "new-password", "", "the new user's password (prefer SHARDKV_NEW_PASSWORD or the prompt)")
	var passwdNew string
	passwd := a.command(&cobra.Command{Use: "passwd NAME", Short: "Change a user's password: its tokens stop working", Args: cobra.ExactArgs(1)},
		clientExitCodes, func(cmd *cobra.Command, args []string) (controllerCall, error) {
			pw, err := newPasswordOf(cmd, args[0], passwdNew)
			if err != nil {
				return nil, err
			}
			return change("password of "+args[0]+" changed", &controllerpb.AuthChangeRequest{Op: &controllerpb.AuthChangeRequest_UserPasswd{
				UserPasswd: &controllerpb.UserPassword{Name: args[0], Password: pw}}}), nil
		})
	passwd.Flags().StringVar(&passwdNew, "new-password", "", "the new password (prefer SHARDKV_NEW_PASSWORD or the prompt)")
	del := a.command(&cobra.Command{Use: "delete NAME", Short: "Delete a user: its tokens stop working", Args: cobra.ExactArgs(1)},
		clientExitCodes, func(_ *cobra.Command, args []string) (controllerCall, error) {
			return change("user "+args[0]+" deleted", &controllerpb.AuthChangeRequest{Op: &controllerpb.AuthChangeRequest_UserDelete{
				UserDelete: &controllerpb.UserName{Name: args[0]}}}), nil
		})
	grant := a.command(&cobra.Command{Use: "grant-role USER ROLE", Short: "Give a user a role", Args: cobra.ExactArgs(2)},
		clientExitCodes, func(_ *cobra.Command, args []string) (controllerCall, error) {
			return change("role "+args[1]+" granted to "+args[0], &controllerpb.AuthChangeRequest{Op: &controllerpb.AuthChangeRequest_UserGrantRole{
				UserGrantRole: &controllerpb.UserRole{User: args[0], Role: args[1]}}}), nil
		})
	revoke := a.command(&cobra.Command{Use: "revoke-role USER ROLE", Short: "Take a role from a user", Args: cobra.ExactArgs(2)},
		clientExitCodes, func(_ *cobra.Command, args []string) (controllerCall, error) {
			return change("role "+args[1]+" revoked from "+args[0], &controllerpb.AuthChangeRequest{Op: &controllerpb.AuthChangeRequest_UserRevokeRole{
				UserRevokeRole: &controllerpb.UserRole{User: args[0], Role: args[1]}}}), nil
		})
	list := a.command(&cobra.Command{Use: "list", Short: "List the users and their roles", Args: cobra.NoArgs},
		clientExitCodes, func(*cobra.Command, []string) (controllerCall, error) { return state("users"), nil })
	cmd.AddCommand(add, del, passwd, grant, revoke, list)
	return cmd
}

func newAdminAuthRoleCmd(a *adminFlags, change func(string, *controllerpb.AuthChangeRequest) controllerCall, state func(string) controllerCall) *cobra.Command {
	cmd := &cobra.Command{Use: "role", Short: "Add, delete and list roles; grant and revoke their permissions", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() }}
	add := a.command(&cobra.Command{Use: "add NAME", Short: "Add a role, with no permission yet", Args: cobra.ExactArgs(1)},
		clientExitCodes, func(_ *cobra.Command, args []string) (controllerCall, error) {
			return change("role "+args[0]+" added", &controllerpb.AuthChangeRequest{Op: &controllerpb.AuthChangeRequest_RoleAdd{
				RoleAdd: &controllerpb.RoleName{Name: args[0]}}}), nil
		})
	del := a.command(&cobra.Command{Use: "delete NAME", Short: "Delete a role (its users lose it)", Args: cobra.ExactArgs(1)},
		clientExitCodes, func(_ *cobra.Command, args []string) (controllerCall, error) {
			return change("role "+args[0]+" deleted", &controllerpb.AuthChangeRequest{Op: &controllerpb.AuthChangeRequest_RoleDelete{
				RoleDelete: &controllerpb.RoleName{Name: args[0]}}}), nil
		})
	grant := a.command(&cobra.Command{Use: "grant ROLE read|write|readwrite PREFIX",
		Short: "Let a role read, write or both the keys that start with PREFIX (\"\" for every key); replaces its permission on PREFIX",
		Args:  cobra.ExactArgs(3)},
		clientExitCodes, func(_ *cobra.Command, args []string) (controllerCall, error) {
			p, err := auth.ParsePermission(args[1], args[2])
			if err != nil {
				return nil, usageError(err)
			}
			return change(fmt.Sprintf("role %s may %s %q", args[0], auth.FormatAccess(p.GetAccess()), args[2]), &controllerpb.AuthChangeRequest{
				Op: &controllerpb.AuthChangeRequest_RoleGrant{RoleGrant: &controllerpb.RolePermission{Role: args[0], Permission: p}}}), nil
		})
	revoke := a.command(&cobra.Command{Use: "revoke ROLE PREFIX", Short: "Take a role's permission on PREFIX away", Args: cobra.ExactArgs(2)},
		clientExitCodes, func(_ *cobra.Command, args []string) (controllerCall, error) {
			return change(fmt.Sprintf("role %s lost its permission on %q", args[0], args[1]), &controllerpb.AuthChangeRequest{
				Op: &controllerpb.AuthChangeRequest_RoleRevoke{RoleRevoke: &controllerpb.RolePermission{Role: args[0],
					Permission: &controllerpb.Permission{Prefix: []byte(args[1])}}}}), nil
		})
	list := a.command(&cobra.Command{Use: "list", Short: "List the roles and their permissions", Args: cobra.NoArgs},
		clientExitCodes, func(*cobra.Command, []string) (controllerCall, error) { return state("roles"), nil })
	cmd.AddCommand(add, del, grant, revoke, list)
	return cmd
}

// newPasswordOf is a new password for user: flag if given (its
// environment variable SHARDKV_NEW_PASSWORD sets it too), else typed twice
// at a prompt.
func newPasswordOf(cmd *cobra.Command, user, flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	pw, err := promptPassword(cmd, fmt.Sprintf("new password of %s: ", user))
	if err != nil {
		return "", err
	}
	again, err := promptPassword(cmd, "again: ")
	if err != nil {
		return "", err
	}
	if pw != again {
		return "", usagef("the passwords differ")
	}
	if pw == "" {
		return "", usagef("empty password")
	}
	return pw, nil
}
