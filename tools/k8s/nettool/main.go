// nettool: the smoke-test image of the single-node cluster. With no arguments (the
// image's entrypoint) it serves on TCP $PORT (default 8080), answering each
// connection with "<hostname> <remote address>\n", and writes $DATA_FILE (if set)
// once at start to prove that its volume is writable. `kubectl exec` runs the
// other commands:
//
//	nettool srv NAME              SRV lookup; prints "target port" lines, sorted
//	nettool host NAME             A/AAAA lookup; prints addresses
//	nettool get HOST:PORT         connects, prints the first line the server sends
//	nettool dial HOST:PORT        connects, prints "connected <remote address>"
//	nettool cat FILE              prints a file (the image has no shell)
//	nettool write FILE TEXT       writes TEXT to FILE
//
// Lookups use the pure-Go resolver and the pod's /etc/resolv.conf, as any static
// binary in a pod does. Exit status 1 with a message on stderr on failure.
package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"time"
)

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "nettool: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "serve" {
		serve()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := &net.Resolver{PreferGo: true}
	args := os.Args[2:]
	need := func(n int) {
		if len(args) != n {
			fail("%s: expected %d argument(s)", os.Args[1], n)
		}
	}
	switch os.Args[1] {
	case "srv":
		need(1)
		_, srvs, err := r.LookupSRV(ctx, "", "", args[0])
		if err != nil {
			fail("SRV %s: %v", args[0], err)
		}
		lines := make([]string, 0, len(srvs))
		for _, s := range srvs {
			lines = append(lines, fmt.Sprintf("%s %d", s.Target, s.Port))
		}
		sort.Strings(lines)
		for _, l := range lines {
			fmt.Println(l)
		}
	case "host":
		need(1)
		addrs, err := r.LookupHost(ctx, args[0])
		if err != nil {
			fail("lookup %s: %v", args[0], err)
		}
		sort.Strings(addrs)
		for _, a := range addrs {
			fmt.Println(a)
		}
	case "get":
		need(1)
		d := net.Dialer{Resolver: r}
		c, err := d.DialContext(ctx, "tcp", args[0])
		if err != nil {
			fail("connect %s: %v", args[0], err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			fail("read from %s: %v", args[0], err)
		}
		fmt.Print(line)
	case "dial":
		need(1)
		d := net.Dialer{Resolver: r}
		c, err := d.DialContext(ctx, "tcp", args[0])
		if err != nil {
			fail("connect %s: %v", args[0], err)
		}
		fmt.Println("connected", c.RemoteAddr())
		c.Close()
	case "cat":
		need(1)
		b, err := os.ReadFile(args[0])
		if err != nil {
			fail("%v", err)
		}
		os.Stdout.Write(b)
	case "write":
		need(2)
		if err := os.WriteFile(args[0], []byte(args[1]), 0o644); err != nil {
			fail("%v", err)
		}
	default:
		fail("unknown command %q (serve, srv, host, get, dial, cat, write)", os.Args[1])
	}
}

func serve() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	host, _ := os.Hostname()
	if f := os.Getenv("DATA_FILE"); f != "" {
		if err := os.WriteFile(f, []byte(host+"\n"), 0o644); err != nil {
			fail("write %s: %v", f, err)
		}
	}
	ln, err := net.Listen("tcp", ":"+port)
	if err != nil {
		fail("listen: %v", err)
	}
	fmt.Printf("nettool: %s serving on :%s\n", host, port)
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		os.Exit(0)
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			continue
		}
		go func(c net.Conn) {
			defer c.Close()
			fmt.Fprintf(c, "%s %s\n", host, c.RemoteAddr())
		}(c)
	}
}
