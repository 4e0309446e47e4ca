package ctlclient

import (
	"context"
	"time"

	"github.com/shardkv/shardkv/internal/rpc"
)

// pollAttempt bounds one long poll of Newer's feed: a replica that does
// not answer within it is left for the next (see Watch).
const pollAttempt = 3 * time.Second

// feed is the one controller long poll a Client keeps for Newer, however
// many callers wait on it: a node's replicas (every group leader it hosts
// asks at every tick) share one, so an idle node costs the controller one
// request per pollAttempt, not one per hosted leader per second.
type feed struct {
	latest  uint64         // the highest configuration number seen
	changed chan struct{}  // closed, and replaced, when latest grows
	waiting map[uint64]int // callers of Newer waiting now, by the number they wait to pass
	polling bool           // the long poll runs
}

// unanswered reports whether a caller waits for a configuration above
// latest: the poll goes on only for them (callers that latest answers may
// not have left yet).
func (f *feed) unanswered() bool {
	for after, n := range f.waiting {
		if n > 0 && after >= f.latest {
			return true
		}
	}
	return false
}

// Newer returns the number of the newest configuration as soon as one
// numbered above after exists, or ctx's error. All callers of one Client
// share a single long poll (Watch) of the controller, which runs while
// anyone waits. Like Watch it is not a linearizable read: fetch the
// configuration itself with Query.
func (c *Client) Newer(ctx context.Context, after uint64) (uint64, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	c.feedMu.Lock()
	if c.feed.waiting == nil {
		c.feed.waiting = map[uint64]int{}
	}
	c.feed.waiting[after]++
	defer func() {
		c.feedMu.Lock()
		if c.feed.waiting[after]--; c.feed.waiting[after] == 0 {
			delete(c.feed.waiting, after)
		}
		c.feedMu.Unlock()
	}()
	for {
		if c.feed.latest > after {
			n := c.feed.latest
			c.feedMu.Unlock()
			return n, nil
		}
		if c.feed.changed == nil {
			c.feed.changed = make(chan struct{})
		}
		ch := c.feed.changed
		if !c.feed.polling {
			c.feed.polling = true
			go c.poll()
		}
		c.feedMu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-c.ctx.Done():
			return 0, ErrClosed
		}
		c.feedMu.Lock()
	}
}

// poll long-polls the controller for configurations above the latest seen
// until no caller waits for one above it (checked after each answer) or
// the Client closes.
func (c *Client) poll() {
	b := rpc.NewBackoff(50*time.Millisecond, time.Second)
	for {
		c.feedMu.Lock()
		after := c.feed.latest
		c.feedMu.Unlock()
		// Each poll is bounded (the server answers "nothing new" before
		// the deadline), so a silent controller replica (stopped, or its
		// packets dropped) holds the feed up for pollAttempt, not for the
		// whole long-poll limit.
		pctx, cancel := context.WithTimeout(c.ctx, pollAttempt)
		cfg, err := c.Watch(pctx, after)
		cancel()
		c.feedMu.Lock()
		if err == nil && cfg.Num > c.feed.latest {
			c.feed.latest = cfg.Num
			if c.feed.changed != nil {
				close(c.feed.changed)
				c.feed.changed = nil
			}
		}
		if !c.feed.unanswered() || c.ctx.Err() != nil {
			c.feed.polling = false
			c.feedMu.Unlock()
			return
		}
		c.feedMu.Unlock()
		if err == nil {
			b.Reset()
		} else {
			if rpc.Wait(c.ctx, b) != nil {
				c.feedMu.Lock()
				c.feed.polling = false
				c.feedMu.Unlock()
				return
			}
		}
	}
}
