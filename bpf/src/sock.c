/* Socket-level load balancing on a cgroup the agent owns (cgroup v2 sock_addr hooks).
 * connect4/6 and sendmsg4/6 turn a service address into a backend before any packet
 * exists; recvmsg4/6 and getpeername4/6 show the service address again to the
 * application. Both families use the same service, backend and Maglev maps and the same
 * socket reverse-NAT map (rr_revnat, keyed by socket cookie, family and backend).
 *
 * IPv4-mapped addresses (::ffff:a.b.c.d) on an AF_INET6 socket are IPv4: connect6 looks
 * them up in the IPv4 service entries and writes the backend back as a mapped address,
 * and recvmsg6 / getpeername6 restore them from the IPv4 reverse-NAT entries. (The kernel
 * hands a mapped sendmsg destination to sendmsg4, so it never reaches sendmsg6.)
 * Affinity is per network namespace (one pod), the only client identity known here.
 */
#include <uapi/linux/in.h>

#include "maps.h"
#include "lib/lb.h"

#define RR_SOCK_PASS 0    /* not a service address: leave it */
#define RR_SOCK_XLATED 1  /* *addr / *port now name a backend */
#define RR_SOCK_REFUSE 2  /* a service with no backend: fail the call (EPERM) */

/* dst = src; an IPv4 address is w[0] (the other words stay as they are: zero). */
static __always_inline void rr_sock_addr_copy(struct rr_addr *dst, const struct rr_addr *src,
                                              __u8 family)
{
    dst->w[0] = src->w[0];
    if (family != RR_AF_INET) {
        dst->w[1] = src->w[1];
        dst->w[2] = src->w[2];
        dst->w[3] = src->w[3];
    }
}

static __always_inline void rr_sock_revnat_key(struct rr_revnat_key *k, __u64 cookie,
                                               const struct rr_addr *addr, __be16 port,
                                               __u8 family, __u8 proto)
{
    k->cookie = cookie;
    rr_sock_addr_copy(&k->addr, addr, family);
    k->port = port;
    k->family = family;
    k->proto = proto;
}

/* If (family, *addr, *port) is a service address (IPv4 in w[0], the rest zero), pick a
 * backend, remember the service under (socket, backend) for the reverse hooks and
 * replace *addr / *port with the backend. */
static __always_inline int rr_sock_xlate(struct bpf_sock_addr *ctx, struct rr_addr *addr,
                                         __be16 *port, __u8 family, __u8 proto)
{
    struct rr_ct_key t = {};
    struct rr_revnat_key rk = {};
    struct rr_revnat_value rv = {};
    struct rr_backend be = {};
    struct rr_svc_value *svc;
    __u64 cookie, netns;
    __u32 id = 0, hash;

    if (!rr_vip_maybe(addr, family))
        return RR_SOCK_PASS;
    rr_sock_addr_copy(&t.daddr, addr, family);
    t.dport = *port;
    t.proto = proto;
    t.family = family;
    svc = rr_svc_lookup(&t);
    if (!svc)
        return RR_SOCK_PASS;
    /* source ranges are judged on the packet (the source address is not chosen yet) */
    if (svc->flags & RR_SVC_SRC_RANGES)
        return RR_SOCK_PASS;
    cookie = bpf_get_socket_cookie(ctx);
    if (svc->affinity_timeout) { /* the client identity only affinity needs */
        netns = bpf_get_netns_cookie(ctx);
        t.saddr.w[0] = (__u32)netns;
        t.saddr.w[1] = (__u32)(netns >> 32);
    }
    hash = rr_mix(rr_mix(0x2545f491, (__u32)cookie), (__u32)(cookie >> 32));
    if (rr_select(&t, svc, hash, &be, &id) < 0 || be.family != family)
        return RR_SOCK_REFUSE;
    rr_sock_revnat_key(&rk, cookie, &be.addr, be.port, family, proto);
    rr_sock_addr_copy(&rv.vip, addr, family);
    rv.port = *port;
    rv.family = family;
    rr_revnat.update(&rk, &rv);
    rr_sock_addr_copy(addr, &be.addr, family);
    *port = be.port;
    return RR_SOCK_XLATED;
}

/* If (family, *addr, *port) is a backend this socket was sent to by rr_sock_xlate,
 * replace it with the service address; 1 if it did. */
static __always_inline int rr_sock_restore(struct bpf_sock_addr *ctx, struct rr_addr *addr,
                                           __be16 *port, __u8 family, __u8 proto)
{
    struct rr_revnat_key rk = {};
    struct rr_revnat_value *rv;

    rr_sock_revnat_key(&rk, bpf_get_socket_cookie(ctx), addr, *port, family, proto);
    rv = rr_revnat.lookup(&rk);
    if (!rv)
        return 0;
    rr_sock_addr_copy(addr, &rv->vip, family);
    *port = rv->port;
    return 1;
}

static __always_inline __u8 rr_sock_proto(struct bpf_sock_addr *ctx)
{
    return ctx->protocol == IPPROTO_UDP ? IPPROTO_UDP : IPPROTO_TCP;
}

/* IPv4 sockets: ctx->user_ip4. */

static __always_inline int rr_sock_xlate4(struct bpf_sock_addr *ctx, __u8 proto)
{
    struct rr_addr a = {};
    __be16 port = (__be16)ctx->user_port;
    int r;

    a.w[0] = ctx->user_ip4;
    r = rr_sock_xlate(ctx, &a, &port, RR_AF_INET, proto);
    if (r == RR_SOCK_XLATED) {
        ctx->user_ip4 = a.w[0];
        ctx->user_port = port;
    }
    return r != RR_SOCK_REFUSE;
}

static __always_inline int rr_sock_restore4(struct bpf_sock_addr *ctx, __u8 proto)
{
    struct rr_addr a = {};
    __be16 port = (__be16)ctx->user_port;

    a.w[0] = ctx->user_ip4;
    if (rr_sock_restore(ctx, &a, &port, RR_AF_INET, proto)) {
        ctx->user_ip4 = a.w[0];
        ctx->user_port = port;
    }
    return 1;
}

/* IPv6 sockets: ctx->user_ip6, which may hold an IPv4-mapped address (then treated as
 * the IPv4 address it maps and written back mapped). Returns the family to look up. */

static __always_inline __u8 rr_sock_read6(struct bpf_sock_addr *ctx, struct rr_addr *a)
{
    a->w[0] = ctx->user_ip6[0];
    a->w[1] = ctx->user_ip6[1];
    a->w[2] = ctx->user_ip6[2];
    a->w[3] = ctx->user_ip6[3];
    if (a->w[0] == 0 && a->w[1] == 0 && a->w[2] == bpf_htonl(0xffff)) {
        a->w[0] = a->w[3];
        a->w[1] = 0;
        a->w[2] = 0;
        a->w[3] = 0;
        return RR_AF_INET;
    }
    return RR_AF_INET6;
}

static __always_inline void rr_sock_write6(struct bpf_sock_addr *ctx, const struct rr_addr *a,
                                           __be16 port, __u8 family)
{
    if (family == RR_AF_INET) {
        ctx->user_ip6[3] = a->w[0]; /* words 0-2 already hold the ::ffff: prefix */
    } else {
        ctx->user_ip6[0] = a->w[0];
        ctx->user_ip6[1] = a->w[1];
        ctx->user_ip6[2] = a->w[2];
        ctx->user_ip6[3] = a->w[3];
    }
    ctx->user_port = port;
}

static __always_inline int rr_sock_xlate6(struct bpf_sock_addr *ctx, __u8 proto)
{
    struct rr_addr a;
    __be16 port = (__be16)ctx->user_port;
    __u8 family = rr_sock_read6(ctx, &a);
    int r;

    r = rr_sock_xlate(ctx, &a, &port, family, proto);
    if (r == RR_SOCK_XLATED)
        rr_sock_write6(ctx, &a, port, family);
    return r != RR_SOCK_REFUSE;
}

static __always_inline int rr_sock_restore6(struct bpf_sock_addr *ctx, __u8 proto)
{
    struct rr_addr a;
    __be16 port = (__be16)ctx->user_port;
    __u8 family = rr_sock_read6(ctx, &a);

    if (rr_sock_restore(ctx, &a, &port, family, proto))
        rr_sock_write6(ctx, &a, port, family);
    return 1;
}

#ifndef RR_SOCK_UDP_CONNECT
#define RR_SOCK_UDP_CONNECT 1
#endif

/* RR_SOCK_UDP_CONNECT 0 (the agent with per-packet LB): a UDP socket's connect() is left
 * alone, so its datagrams go to the service address and the per-packet path translates
 * them, with a conntrack that balances the flow anew when its backend goes away (a socket
 * connected to a backend would keep sending to it). */
static __always_inline int rr_sock_connect_leaves(__u8 proto)
{
    return !RR_SOCK_UDP_CONNECT && proto == IPPROTO_UDP;
}

int rr_sock_connect4(struct bpf_sock_addr *ctx)
{
    __u8 proto = rr_sock_proto(ctx);

    if (rr_sock_connect_leaves(proto))
        return 1;
    return rr_sock_xlate4(ctx, proto);
}

int rr_sock_sendmsg4(struct bpf_sock_addr *ctx)
{
    return rr_sock_xlate4(ctx, IPPROTO_UDP);
}

int rr_sock_recvmsg4(struct bpf_sock_addr *ctx)
{
    return rr_sock_restore4(ctx, IPPROTO_UDP);
}

int rr_sock_getpeername4(struct bpf_sock_addr *ctx)
{
    return rr_sock_restore4(ctx, rr_sock_proto(ctx));
}

int rr_sock_connect6(struct bpf_sock_addr *ctx)
{
    __u8 proto = rr_sock_proto(ctx);

    if (rr_sock_connect_leaves(proto))
        return 1;
    return rr_sock_xlate6(ctx, proto);
}

int rr_sock_sendmsg6(struct bpf_sock_addr *ctx)
{
    return rr_sock_xlate6(ctx, IPPROTO_UDP);
}

int rr_sock_recvmsg6(struct bpf_sock_addr *ctx)
{
    return rr_sock_restore6(ctx, IPPROTO_UDP);
}

int rr_sock_getpeername6(struct bpf_sock_addr *ctx)
{
    return rr_sock_restore6(ctx, rr_sock_proto(ctx));
}
