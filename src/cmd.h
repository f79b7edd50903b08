/*
 * cmd.h — the entry point of every `d11 SUBCOMMAND`. Each takes the argv that follows
 * the subcommand name (argv[0] is the subcommand) and returns the process exit status:
 * 0 success, 1 failure (one-line reason on stderr), 2 usage error.
 */
#ifndef D11_CMD_H
#define D11_CMD_H

int d11_up_main(int argc, char **argv);      /* src/up/up.c */
int d11_gateway_main(int argc, char **argv); /* src/gateway/gateway.c */
int d11_cell_main(int argc, char **argv);    /* src/cell/cell.c */
int d11_center_main(int argc, char **argv);  /* src/center/center.c (the process) */
int d11_token_main(int argc, char **argv);   /* src/ctl/token.c */
int d11_ctl_main(int argc, char **argv);     /* src/ctl/ctl.c */
int d11_bench_main(int argc, char **argv);   /* src/bench/bench.c */
int d11_audit_main(int argc, char **argv);   /* src/ctl/audit.c */
int d11_bench_engine_main(int argc, char **argv); /* src/bench/engine.c */
int d11_rehearse_main(int argc, char **argv); /* src/rehearse/rehearse.c */

#endif
