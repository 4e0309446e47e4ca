package rpc_test

import (
	"testing"

	"github.com/shardkv/shardkv/internal/rpc"
)

// TestCheckAddr: the address of a replica or a controller is host:port
// with a host and a port from 1 to 65535; the typos a new user made are
// refused.
func TestCheckAddr(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:7100", "localhost:1", "[::1]:65535", "node-1.example.com:7113"} {
		if err := rpc.CheckAddr(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "127.0.0.1", "17415", ":17415", "127.0.0.1:0", "127.0.0.1:174155", "127.0.0.1: 17415",
		"127.0.0.1:x", "http://127.0.0.1:7100", "a:1,b:2", "bad host:1"} {
		if err := rpc.CheckAddr(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
