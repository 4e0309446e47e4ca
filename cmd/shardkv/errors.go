package main

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/shardkv/shardkv/api/controllerpb"
	"github.com/shardkv/shardkv/api/kvpb"
	"github.com/shardkv/shardkv/api/memberpb"
	"github.com/shardkv/shardkv/api/rpcerr"
	"github.com/shardkv/shardkv/backup"
	"github.com/shardkv/shardkv/client"
	"github.com/shardkv/shardkv/controller/ctlclient"
	"github.com/shardkv/shardkv/group/groupserver"
	"github.com/shardkv/shardkv/storage"
)

// phrase rewrites one sentinel error's text for people. The exported
// errors keep their texts (and programs match them with errors.Is); only
// what the CLI prints changes. A %s in text takes the word that followed
// the sentinel after ": " (controller: unknown group: 9 -> there is no
// group 9 ...).
type phrase struct {
	err  error
	text string
}

var phrases = []phrase{
	{kvpb.ErrWrongGroup, "the group does not serve the key's shard"},
	{kvpb.ErrNotReady, "the key's shard is moving between groups; try again"},
	{kvpb.ErrStaleConfig, "the group has moved past that configuration"},
	{kvpb.ErrKeyTooLarge, "the key is too large"},
	{kvpb.ErrValueTooLarge, "the value is too large"},
	{kvpb.ErrEmptyKey, "the key is empty (a key needs at least one byte)"},

	{controllerpb.ErrNotInitialized, "the controller is not initialized yet"},
	{controllerpb.ErrInvalidGroup, "invalid group"},
	{controllerpb.ErrGroupExists, "the group has already joined with other addresses"},
	{controllerpb.ErrUnknownGroup, "there is no group %s in the configuration"},
	{controllerpb.ErrUnknownShard, "there is no shard %s"},
	{controllerpb.ErrWouldOrphan, "removing every group would orphan their data (add --force to do it anyway)"},
	{controllerpb.ErrInvalidShards, "the shard count must be between 1 and 4096"},

	{rpcerr.ErrStaleRequest, "the request is older than its session's last applied one"},
	{rpcerr.ErrSessionExpired, "the client's session expired"},
	{rpcerr.ErrMalformed, "the server could not decode the request"},

	{rpcerr.ErrStoppedInFlight, "the replica stopped with the request in flight (its outcome is unknown)"},
	{rpcerr.ErrStopped, "the replica is stopping"},
	{rpcerr.ErrProposalDropped, "the request was dropped (not applied)"},
	{rpcerr.ErrLeaderChanged, "the leader changed with the request in flight (its outcome is unknown)"},
	{rpcerr.ErrNotLeader, "the replica is not the leader"},
	{rpcerr.ErrReadTimeout, "no leader could confirm the read (no quorum?)"},
	{rpcerr.ErrNoSpace, "no space left on the disk (writes are refused until space is freed; reads still work)"},
	{rpcerr.ErrStalled, "a synced write stalled (the disk is stuck or failing)"},

	{rpcerr.ErrMembershipChangeInProgress, "another membership change of the group is in progress; try again when it is done"},
	{rpcerr.ErrUnknownMember, "there is no member %s in the group"},
	{rpcerr.ErrMemberExists, "member %s is already in the group"},
	{rpcerr.ErrMemberRemoved, "id %s was a member of the group once, and ids are never reused"},
	{rpcerr.ErrMemberAddrInUse, "another member of the group has that address"},
	{rpcerr.ErrNotLearner, "member %s is not a learner (add it with `admin member add` first)"},
	{rpcerr.ErrLearnerBehind, "the learner has not caught up with the leader yet; try again shortly"},
	{rpcerr.ErrWouldLoseQuorum, "refused: after the change fewer voters than a quorum would be reachable"},
	{rpcerr.ErrBadMemberAddr, "a new member needs a host:port address"},
	{rpcerr.ErrBadMemberChange, "malformed membership change"},
	{memberpb.ErrWrongGroup, "the replica asked is not in that group"},

	{backup.ErrNoConfiguration, "the cluster has no configuration yet (no group has joined): there is nothing to back up"},
	{groupserver.ErrRestoreRefused, "the restore was refused"},

	{client.ErrUnknownOutcome, "the write may or may not have been applied (never twice: read the key to know)"},
	{ctlclient.ErrUnknownOutcome, "the change may or may not have been applied (never twice: see shardkv admin config)"},
	{ctlclient.ErrNoAddresses, "no controller addresses (--controllers)"},
}

var (
	// A word after a sentinel's text, for a phrase's %s.
	detailWord = regexp.MustCompile(`^: ([^\s:,;()]+)`)
	// Go package prefixes left in a message: "group: ", "shardkv: ", ...
	pkgPrefix = regexp.MustCompile(`(^|: |\(|; )(shardkv|group|controller|ctlclient|raftnode|storage|cluster|client|transport|rpcerr|member): `)
	// gRPC's wrapping of a status and of a dial failure.
	grpcStatus = regexp.MustCompile(`rpc error: code = \w+ desc = `)
	grpcDial   = regexp.MustCompile(`connection error: desc = "transport: (?:Error while dialing: )?([^"]*)"`)
)

// describe turns err into one sentence for people: sentinels in words,
// without Go package prefixes, nothing said twice.
func describe(err error) string {
	var locked *storage.LockedError
	if errors.As(err, &locked) {
		return fmt.Sprintf("the data directory %s is locked by another shardkv process (stop it, or give this one another --data)", locked.Dir)
	}
	msg := err.Error()
	for _, p := range phrases {
		msg = rephrase(msg, p)
	}
	msg = grpcDial.ReplaceAllString(msg, "$1")
	msg = grpcStatus.ReplaceAllString(msg, "")
	for {
		next := pkgPrefix.ReplaceAllString(msg, "$1")
		if next == msg {
			break
		}
		msg = next
	}
	msg = strings.ReplaceAll(msg, "context deadline exceeded", "timed out")
	for _, h := range tlsHints {
		if strings.Contains(msg, h.symptom) {
			return msg + " (" + h.hint + ")"
		}
	}
	return msg
}

// tlsHints say what a TLS handshake failure means for the flags. A TLS
// server drops a plaintext client's connection during its handshake: the
// client reads EOF or a reset where the HTTP/2 preface should be,
// whichever the timing gives.
var tlsHints = []struct{ symptom, hint string }{
	{"error reading server preface: ", "does the cluster use TLS? give --cacert, and --cert and --key if it requires client certificates"},
	{"tls: certificate required", "the cluster requires a client certificate: give --cert and --key"},
	{"certificate signed by unknown authority", "--cacert does not hold the CA that signed the server's certificate"},
	{"first record does not look like a TLS handshake", "the server does not use TLS: drop --cacert, --cert and --key"},
	{"tls: unknown certificate authority", "the cluster does not trust the CA of --cert"},
}

// rephrase replaces p's sentinel text in msg by p's words.
func rephrase(msg string, p phrase) string {
	text := p.err.Error()
	i := strings.Index(msg, text)
	if i < 0 {
		return msg
	}
	before, after := msg[:i], msg[i+len(text):]
	words := p.text
	if strings.Contains(words, "%s") {
		m := detailWord.FindStringSubmatch(after)
		if m == nil {
			return before + strings.TrimSpace(strings.ReplaceAll(words, " %s", "")) + after
		}
		words, after = fmt.Sprintf(words, m[1]), after[len(m[0]):]
	}
	return before + words + after
}
