package rpc

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// CheckAddr accepts a replica's or a controller's address: host:port with
// a host (a name or an IP, no spaces) and a port from 1 to 65535. Its
// error says what is wrong, without the address.
func CheckAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	switch {
	case err != nil:
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return errors.New(ae.Err)
		}
		return err
	case host == "":
		return errors.New("no host")
	case strings.ContainsFunc(host, func(r rune) bool { return r <= ' ' }):
		return fmt.Errorf("host %q has a space or a control character", host)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	return nil
}
