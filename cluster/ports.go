package cluster

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
)

// Ports are handed out below Linux's default ephemeral range (32768 and
// up): a port taken with ":0" and released is free for any outgoing
// connection to grab before the replica meant for it binds it, while a
// port from this range is only ever taken by another listener.
const (
	portLow  = 10000
	portHigh = 30000
)

var (
	portMu   sync.Mutex
	portUsed = map[int]bool{}
)

// FreeAddr returns a 127.0.0.1 address with a port that is free now, below
// the ephemeral range, and not handed out before by this process.
func FreeAddr() (string, error) {
	portMu.Lock()
	defer portMu.Unlock()
	for attempt := 0; attempt < 1000; attempt++ {
		p := portLow + rand.IntN(portHigh-portLow)
		if portUsed[p] {
			continue
		}
		addr := fmt.Sprintf("127.0.0.1:%d", p)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		l.Close()
		portUsed[p] = true
		return addr, nil
	}
	return "", errors.New("cluster: no free port found")
}
