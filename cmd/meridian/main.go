// Command meridian is the single binary of the Meridian scheduler mesh: one
// agent per machine, plus the tools operators use around it.
//
// Exit codes: 0 on success, 2 for bad usage or bad input (flags, files,
// values), 1 for any other failure. Errors go to standard error as
// "meridian: <message>".
package main

import "os"

// version is the build's version, set at link time with
// -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
