# What ops might deploy instead of wardgate: Varnish in front of the origin, caching the
# citizens GETs and master data for minutes, gzipping JSON (stored gzip, gunzip for identity
# clients: Varnish's usual http_gzip_support behaviour).
vcl 4.1;

backend origin {
    .host = "127.0.0.1";
    .port = "@ORIGIN_PORT@";
    .connect_timeout = 5s;
    .first_byte_timeout = 120s;
    .between_bytes_timeout = 60s;
}

sub vcl_recv {
    if (req.method == "GET" && req.url ~ "^/open/volunteer/(citizens\?|states|parties|assemblyConstituencys/|wardsAndBooths/|applicationSettings)") {
        unset req.http.Cookie;
        unset req.http.Authorization;
        return (hash);
    }
    return (pass);
}

sub vcl_backend_response {
    if (bereq.url ~ "^/open/volunteer/") {
        set beresp.ttl = 10m;
        set beresp.grace = 1h;
        unset beresp.http.Set-Cookie;
        unset beresp.http.Cache-Control;
        if (beresp.http.Content-Type ~ "json") {
            set beresp.do_gzip = true;
        }
    }
}

sub vcl_deliver {
    if (obj.hits > 0) { set resp.http.X-Cache = "HIT"; } else { set resp.http.X-Cache = "MISS"; }
}
