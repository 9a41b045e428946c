// testbox is the one program of the local test cluster's test image (underpass.test/testbox):
// a small HTTP and TCP-echo server for pods to run, and the clients tests exec inside pods
// (or run on the host) to check pod networking, Services and cluster DNS. Standard library
// only, static, no shell in the image: every check a test needs is a subcommand here.
//
//	testbox serve [-http ADDR] [-echo ADDR] [-name TEXT]   serve until SIGTERM/SIGINT
//	testbox get [-timeout D] [-cacert FILE] URL            print the body of a 200 response
//	testbox resolve [-server IP:PORT] [-timeout D] NAME    print NAME's addresses
//	testbox echo-check [-bytes N] [-timeout D] HOST:PORT   send N random bytes, expect them back
//	testbox sleep                                          wait for SIGTERM/SIGINT
//
// Exit status 0 on success, 1 on a failed check (the reason on stderr), 2 on bad usage.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmd, args := os.Args[1], os.Args[2:]
	var err error
	switch cmd {
	case "serve":
		err = serve(args)
	case "get":
		err = get(args)
	case "resolve":
		err = resolve(args)
	case "echo-check":
		err = echoCheck(args)
	case "sleep":
		waitForSignal()
	case "version":
		fmt.Println("underpass-test testbox")
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "testbox %s: %v\n", cmd, err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: testbox serve|get|resolve|echo-check|sleep|version [flags] (see -h of each)")
	os.Exit(2)
}

func waitForSignal() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	<-sigs
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	httpAddr := fs.String("http", ":8080", "HTTP listen address (empty: none); GET / answers NAME host=HOSTNAME")
	echoAddr := fs.String("echo", "", "TCP echo listen address (empty: none)")
	name := fs.String("name", "testbox", "first word of every HTTP answer")
	_ = fs.Parse(args)

	host, _ := os.Hostname()
	errs := make(chan error, 2)
	if *httpAddr != "" {
		ln, err := net.Listen("tcp", *httpAddr)
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			_, _ = fmt.Fprintf(w, "%s host=%s client=%s\n", *name, host, r.RemoteAddr)
		})
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { errs <- srv.Serve(ln) }()
		fmt.Printf("http on %s\n", ln.Addr())
	}
	if *echoAddr != "" {
		ln, err := net.Listen("tcp", *echoAddr)
		if err != nil {
			return err
		}
		go func() { errs <- echoLoop(ln) }()
		fmt.Printf("echo on %s\n", ln.Addr())
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	select {
	case <-sigs:
		return nil
	case err := <-errs:
		return err
	}
}

func echoLoop(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}

func get(args []string) error {
	fs := flag.NewFlagSet("get", flag.ExitOnError)
	timeout := fs.Duration("timeout", 5*time.Second, "whole request timeout")
	cacert := fs.String("cacert", "", "PEM file of the CA that signs the server's certificate (https)")
	_ = fs.Parse(args)
	if fs.NArg() != 1 {
		return errors.New("exactly one URL expected")
	}
	client := &http.Client{Timeout: *timeout}
	if *cacert != "" {
		pem, err := os.ReadFile(*cacert)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("no certificate in %s", *cacert)
		}
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	resp, err := client.Get(fs.Arg(0))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: status %s", fs.Arg(0), resp.Status)
	}
	_, err = os.Stdout.Write(body)
	return err
}

func resolve(args []string) error {
	fs := flag.NewFlagSet("resolve", flag.ExitOnError)
	server := fs.String("server", "", "DNS server IP:PORT (default: the system resolver, /etc/resolv.conf)")
	timeout := fs.Duration("timeout", 5*time.Second, "lookup timeout")
	_ = fs.Parse(args)
	if fs.NArg() != 1 {
		return errors.New("exactly one NAME expected")
	}
	r := &net.Resolver{PreferGo: true}
	if *server != "" {
		r.Dial = func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, *server)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	addrs, err := r.LookupHost(ctx, fs.Arg(0))
	if err != nil {
		return err
	}
	for _, a := range addrs {
		fmt.Println(a)
	}
	return nil
}

func echoCheck(args []string) error {
	fs := flag.NewFlagSet("echo-check", flag.ExitOnError)
	n := fs.Int("bytes", 1<<20, "how many random bytes to send")
	timeout := fs.Duration("timeout", 10*time.Second, "whole exchange timeout")
	_ = fs.Parse(args)
	if fs.NArg() != 1 {
		return errors.New("exactly one HOST:PORT expected")
	}
	payload := make([]byte, *n)
	if _, err := rand.Read(payload); err != nil {
		return err
	}
	c, err := net.DialTimeout("tcp", fs.Arg(0), *timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(*timeout))
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if err := <-werr; err != nil {
		return err
	}
	want := sha256.Sum256(payload)
	if !bytes.Equal(got, payload) {
		return fmt.Errorf("echo differs: sent %d bytes sha256=%x, got %d bytes sha256=%x", len(payload), want, len(got), sha256.Sum256(got))
	}
	fmt.Printf("ok %d bytes sha256=%x\n", len(payload), want)
	return nil
}
