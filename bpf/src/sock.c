/* Socket-level load balancing on a cgroup the agent owns (cgroup v2 sock_addr hooks).
 * connect4 / sendmsg4 turn a service address into a backend before any packet exists;
 * recvmsg4 / getpeername4 show the service address again to the application.
 * Affinity is per network namespace (one pod), the only client identity known here.
 */
#include <uapi/linux/in.h>

#include "maps.h"
#include "lib/lb.h"

static __always_inline void rr_sock_revnat_key(struct rr_revnat_key *k, __u64 cookie,
                                               __be32 ip, __u32 port, __u8 proto)
{
    k->cookie = cookie;
    k->addr.w[0] = ip;
    k->port = (__be16)port;
    k->family = RR_AF_INET;
    k->proto = proto;
}

static __always_inline int rr_sock_xlate(struct bpf_sock_addr *ctx, __u8 proto)
{
    struct rr_ct_key t = {};
    struct rr_revnat_key rk = {};
    struct rr_revnat_value rv = {};
    struct rr_backend be = {};
    struct rr_svc_value *svc;
    __u64 cookie, netns;
    __u32 id = 0, hash;

    t.daddr.w[0] = ctx->user_ip4;
    t.dport = (__be16)ctx->user_port;
    t.proto = proto;
    t.family = RR_AF_INET;
    svc = rr_svc_lookup(&t);
    if (!svc)
        return 1;
    cookie = bpf_get_socket_cookie(ctx);
    netns = bpf_get_netns_cookie(ctx);
    t.saddr.w[0] = (__u32)netns;
    t.saddr.w[1] = (__u32)(netns >> 32);
    hash = rr_mix(rr_mix(0x2545f491, (__u32)cookie), (__u32)(cookie >> 32));
    if (rr_select(&t, svc, hash, &be, &id) < 0)
        return 0; /* no backend: refuse with EPERM */
    rr_sock_revnat_key(&rk, cookie, be.addr.w[0], be.port, proto);
    rv.vip.w[0] = ctx->user_ip4;
    rv.port = (__be16)ctx->user_port;
    rv.family = RR_AF_INET;
    rr_revnat.update(&rk, &rv);
    ctx->user_ip4 = be.addr.w[0];
    ctx->user_port = be.port;
    return 1;
}

static __always_inline int rr_sock_restore(struct bpf_sock_addr *ctx, __u8 proto)
{
    struct rr_revnat_key rk = {};
    struct rr_revnat_value *rv;

    rr_sock_revnat_key(&rk, bpf_get_socket_cookie(ctx), ctx->user_ip4, ctx->user_port, proto);
    rv = rr_revnat.lookup(&rk);
    if (rv) {
        ctx->user_ip4 = rv->vip.w[0];
        ctx->user_port = rv->port;
    }
    return 1;
}

int rr_sock_connect4(struct bpf_sock_addr *ctx)
{
    __u8 proto = ctx->protocol == IPPROTO_UDP ? IPPROTO_UDP : IPPROTO_TCP;

    return rr_sock_xlate(ctx, proto);
}

int rr_sock_sendmsg4(struct bpf_sock_addr *ctx)
{
    return rr_sock_xlate(ctx, IPPROTO_UDP);
}

int rr_sock_recvmsg4(struct bpf_sock_addr *ctx)
{
    return rr_sock_restore(ctx, IPPROTO_UDP);
}

int rr_sock_getpeername4(struct bpf_sock_addr *ctx)
{
    __u8 proto = ctx->protocol == IPPROTO_UDP ? IPPROTO_UDP : IPPROTO_TCP;

    return rr_sock_restore(ctx, proto);
}
