// gatehook sandbox runtime: evaluated once in every fresh QuickJS context, before the
// action (see engine.py). Its value is the set-up function the host calls with the limits.
//
// It gives a script exactly what docs/contract.md promises and nothing more: its input, its
// config, console/log capture, require() of zitadel/http, zitadel/log, zitadel/uuid, and for
// Auth0 Actions their event and api.
// The host exports no Python function but __gh_fetch (the guarded fetch, present only for
// actions with allowed hosts, taken off the global object here), loads no module from disk,
// and passes no environment.
(function (G) {
  'use strict';
  var hostFetch = typeof G.__gh_fetch === 'function' ? G.__gh_fetch : null;
  delete G.__gh_fetch;
  var stringify = JSON.stringify;
  var parse = JSON.parse;
  var hasOwn = Object.prototype.hasOwnProperty;
  var pThen = Promise.prototype.then;
  var pResolve = Promise.resolve.bind(Promise);
  var limits = { log_bytes: 8192, output_bytes: 262144, auth0: {} };
  var ProxyOf = Proxy;
  var state = { logs: [], bytes: 0, truncated: false };

  function show(value) {
    if (typeof value === 'string') return value;
    try {
      var s = stringify(value);
      return s === undefined ? String(value) : s;
    } catch (e) {
      try { return String(value); } catch (e2) { return '[unprintable]'; }
    }
  }

  function record(level, args) {
    if (state.truncated) return;
    var parts = [];
    for (var i = 0; i < args.length; i++) parts.push(show(args[i]));
    var line = level + ': ' + parts.join(' ');
    if (state.bytes + line.length > limits.log_bytes) {
      var room = limits.log_bytes - state.bytes;
      if (room > 0) state.logs.push(line.slice(0, room));
      state.logs.push('[log truncated]');
      state.truncated = true;
      return;
    }
    state.bytes += line.length;
    state.logs.push(line);
  }

  function logger(level) { return function () { record(level, arguments); }; }

  var log = Object.freeze({
    log: logger('info'), info: logger('info'), debug: logger('debug'),
    warn: logger('warn'), error: logger('error')
  });

  function hex(n) {
    var s = '';
    for (var i = 0; i < n; i++) s += Math.floor(Math.random() * 16).toString(16);
    return s;
  }
  function uuid4() {
    var variant = (8 + Math.floor(Math.random() * 4)).toString(16);
    return hex(8) + '-' + hex(4) + '-4' + hex(3) + '-' + variant + hex(3) + '-' + hex(12);
  }
  function uuid1() {
    var t = Date.now().toString(16);
    while (t.length < 12) t = '0' + t;
    var variant = (8 + Math.floor(Math.random() * 4)).toString(16);
    return t.slice(-8) + '-' + t.slice(-12, -8) + '-1' + hex(3) + '-' + variant + hex(3) + '-' + hex(12);
  }
  var uuid = Object.freeze({ v1: uuid1, v4: uuid4 });

  function fetch(url, options) {
    var opts = options === undefined ? {} : options;
    if (hostFetch === null) throw new Error('http: outbound HTTP is not allowed for this action (no allowed hosts)');
    // One flat string crosses to the host (the binding cannot convert rope strings).
    var res = parse(hostFetch(stringify([String(url), stringify(opts)])));
    if (!res || res.error) throw new Error('http: ' + (res ? res.error : 'no response'));
    var body = res.body;
    return Object.freeze({
      status: res.status,
      ok: res.status >= 200 && res.status < 300,
      headers: res.headers,
      body: body,
      text: function () { return body; },
      json: function () { return parse(body); }
    });
  }
  var http = Object.freeze({ fetch: fetch });

  // The global fetch of Auth0 Actions (and Node): WHATWG's shape over the same guarded call,
  // so only an action's allowed hosts are reachable, and none without them.
  function globalFetch(url, init) {
    var o = init && typeof init === 'object' ? init : {};
    var opts = {};
    if (o.method !== undefined) opts.method = String(o.method);
    if (o.body !== undefined && o.body !== null) opts.body = String(o.body);
    if (o.headers && typeof o.headers === 'object') {
      opts.headers = {};
      for (var k in o.headers) if (hasOwn.call(o.headers, k)) opts.headers[k] = String(o.headers[k]);
    }
    return new Promise(function (resolve) {
      var res = fetch(String(url && url.href !== undefined ? url.href : url), opts);
      var lower = {};
      var raw = res.headers || {};
      for (var name in raw) if (hasOwn.call(raw, name)) lower[name.toLowerCase()] = raw[name];
      resolve(Object.freeze({
        ok: res.ok, status: res.status, url: String(url),
        headers: Object.freeze({
          get: function (n) { var v = lower[String(n).toLowerCase()]; return v === undefined ? null : v; },
          has: function (n) { return hasOwn.call(lower, String(n).toLowerCase()); }
        }),
        text: function () { return pResolve(res.body); },
        json: function () { return new Promise(function (ok) { ok(parse(res.body)); }); }
      }));
    });
  }

  var modules = { 'zitadel/log': log, 'zitadel/uuid': uuid, 'zitadel/http': http };
  function require(id) {
    if (hasOwn.call(modules, id)) return modules[id];
    throw new Error("Cannot find module '" + String(id) +
      "': only zitadel/http, zitadel/log and zitadel/uuid are available");
  }

  G.console = Object.freeze({
    log: logger('info'), info: logger('info'), debug: logger('debug'),
    warn: logger('warn'), error: logger('error')
  });
  G.require = require;
  G.fetch = globalFetch;

  function describe(e) {
    try {
      if (e instanceof Error) return String(e.name) + ': ' + String(e.message);
      return 'non-Error value thrown: ' + show(e).slice(0, 500);
    } catch (e2) {
      return 'unprintable value thrown';
    }
  }

  // ---- ZITADEL v1 style: ctx and api ------------------------------------------------
  function metadataList(obj) {
    var md = [];
    if (obj && typeof obj === 'object') {
      for (var k in obj) if (hasOwn.call(obj, k)) md.push({ key: k, value: obj[k] });
    }
    return { count: md.length, metadata: md };
  }

  function orgMetadata() { return metadataList(this.orgMetadata); }

  // The input is this call's own (parsed for it), so ctx is built on it in place: no copies.
  function buildCtx(input) {
    var c = input.context || {};
    var v1 = c;
    var user = input.user || {};
    var metadata = user.metadata;
    var grants = Array.isArray(user.grants) ? user.grants : [];
    for (var i = 0; i < grants.length; i++) {
      var g = grants[i];
      if (g && typeof g === 'object') g.getOrgMetadata = orgMetadata;
    }
    user.grants = { count: grants.length, grants: grants };
    user.getMetadata = function () { return metadataList(metadata); };
    v1.user = user;
    v1.getUser = function () { return user; };
    var org = c.org && typeof c.org === 'object' ? c.org : {};
    var orgMeta = org.metadata;
    org.getMetadata = function () { return metadataList(orgMeta); };
    v1.org = org;
    var app = c.application && typeof c.application === 'object' ? c.application : {};
    app.getClientId = function () { return app.client_id; };
    v1.application = app;
    var claims = c.claims || {};
    function getClaim(name) { return claims[name]; }
    v1.getClaim = getClaim;
    return {
      v1: v1, getClaim: getClaim, trigger: input.trigger, request: input.request,
      state: input.state, config: input.config
    };
  }

  var FIELDS = {
    setFirstName: 'first_name', setLastName: 'last_name', setNickName: 'nick_name',
    setDisplayName: 'display_name', setPreferredUsername: 'preferred_username',
    setUsername: 'username', setEmail: 'email', setEmailVerified: 'email_verified',
    setPhone: 'phone', setPhoneVerified: 'phone_verified',
    setPreferredLanguage: 'preferred_language', setGender: 'gender'
  };

  // The api's functions are made once per context and write to the call in progress (`cur`):
  // one call runs at a time in a context, and a call's api is its own object with its own
  // arrays (`metadata`, `userGrants`) on top of them.
  var cur = null;
  var apiName = '';
  var setters = {};
  Object.keys(FIELDS).forEach(function (fn) {
    var field = FIELDS[fn];
    setters[fn] = function (value) { cur.user_updates[field] = value; };
  });
  function appendMetadata(key, value) { cur.appended.push({ key: String(key), value: value }); }
  var claimsApi = {
    setClaim: function (key, value) { cur.claims[String(key)] = value; },
    appendLogIntoClaims: function (entry) {
      var k = 'urn:zitadel:iam:action:' + apiName + ':log';
      if (!Array.isArray(cur.claims[k])) cur.claims[k] = [];
      cur.claims[k].push(String(entry));
    }
  };
  var userApi = Object.assign({}, setters, {
    appendMetadata: appendMetadata, setMetadata: appendMetadata
  });
  var attributesApi = {
    setCustomAttribute: function (name, nameFormat) {
      var values = [];
      for (var i = 2; i < arguments.length; i++) values.push(String(arguments[i]));
      cur.saml_attributes[String(name)] = values;
    }
  };
  var apiProto = Object.assign({}, setters, { claims: claimsApi });

  function buildApi(actionName) {
    apiName = actionName;
    var m = { claims: {}, user_updates: {}, appended: [], saml_attributes: {} };
    cur = m;
    var metadata = [];
    var userGrants = [];
    var api = Object.create(apiProto);
    api.metadata = metadata;
    api.userGrants = userGrants;
    api.v1 = {
      claims: claimsApi, userinfo: claimsApi, user: userApi, userGrants: userGrants,
      attributes: attributesApi
    };
    function collect() {
      var md = m.appended.slice();
      metadata.forEach(function (e) {
        if (e && typeof e === 'object') md.push({ key: String(e.key), value: e.value });
      });
      var grants = userGrants.map(function (g) {
        var out = { project_id: String(g.projectID || g.projectId || g.project_id || ''), roles: (g.roles || []).map(String) };
        var pg = g.projectGrantID || g.projectGrantId || g.project_grant_id;
        if (pg) out.project_grant_id = String(pg);
        return out;
      });
      return {
        kind: 'continue', claims: m.claims, user_updates: m.user_updates, metadata: md,
        saml_attributes: m.saml_attributes, user_grants: grants
      };
    }
    return { api: api, collect: collect };
  }

  // ---- Auth0 style: exports.onExecutePostLogin(event, api) and the other handlers ------
  // (docs/contract.md, "Auth0 Actions"). `limits.auth0` is the host's table: per trigger, the
  // handlers that may run there, the preferred first (domain/auth0.py).
  var AUTH0_EXPORTS = ['onExecutePostLogin', 'onContinuePostLogin', 'onExecutePreUserRegistration',
    'onExecutePostUserRegistration', 'onExecuteCredentialsExchange'];

  // HS256 (HMAC-SHA-256) for api.redirect.encodeToken and validateToken: the engine has no
  // crypto, so it is here, on byte arrays.
  var K256 = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2
  ];

  function sha256(msg) {
    var h = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c,
      0x1f83d9ab, 0x5be0cd19];
    var bytes = msg.slice();
    var bits = msg.length * 8;
    bytes.push(0x80);
    while (bytes.length % 64 !== 56) bytes.push(0);
    var hi = Math.floor(bits / 0x100000000), lo = bits >>> 0;
    bytes.push(hi >>> 24 & 255, hi >>> 16 & 255, hi >>> 8 & 255, hi & 255,
      lo >>> 24 & 255, lo >>> 16 & 255, lo >>> 8 & 255, lo & 255);
    var w = new Array(64), i;
    for (var off = 0; off < bytes.length; off += 64) {
      for (i = 0; i < 16; i++) {
        w[i] = (bytes[off + 4 * i] << 24) | (bytes[off + 4 * i + 1] << 16) |
          (bytes[off + 4 * i + 2] << 8) | bytes[off + 4 * i + 3];
      }
      for (i = 16; i < 64; i++) {
        var x = w[i - 15], y = w[i - 2];
        var s0 = (x >>> 7 | x << 25) ^ (x >>> 18 | x << 14) ^ (x >>> 3);
        var s1 = (y >>> 17 | y << 15) ^ (y >>> 19 | y << 13) ^ (y >>> 10);
        w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
      }
      var a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
      for (i = 0; i < 64; i++) {
        var t1 = (k + ((e >>> 6 | e << 26) ^ (e >>> 11 | e << 21) ^ (e >>> 25 | e << 7)) +
          ((e & f) ^ (~e & g)) + K256[i] + w[i]) | 0;
        var t2 = (((a >>> 2 | a << 30) ^ (a >>> 13 | a << 19) ^ (a >>> 22 | a << 10)) +
          ((a & b) ^ (a & c) ^ (b & c))) | 0;
        k = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
      }
      h[0] = (h[0] + a) | 0; h[1] = (h[1] + b) | 0; h[2] = (h[2] + c) | 0;
      h[3] = (h[3] + d) | 0; h[4] = (h[4] + e) | 0; h[5] = (h[5] + f) | 0;
      h[6] = (h[6] + g) | 0; h[7] = (h[7] + k) | 0;
    }
    var out = [];
    for (i = 0; i < 8; i++) out.push(h[i] >>> 24 & 255, h[i] >>> 16 & 255, h[i] >>> 8 & 255, h[i] & 255);
    return out;
  }

  function hmac256(key, msg) {
    var k = key.length > 64 ? sha256(key) : key.slice();
    while (k.length < 64) k.push(0);
    var inner = [], outer = [];
    for (var i = 0; i < 64; i++) { inner.push(k[i] ^ 0x36); outer.push(k[i] ^ 0x5c); }
    return sha256(outer.concat(sha256(inner.concat(msg))));
  }

  function utf8(str) {
    var out = [];
    for (var i = 0; i < str.length; i++) {
      var c = str.charCodeAt(i);
      if (c >= 0xd800 && c < 0xdc00 && i + 1 < str.length) {
        var d = str.charCodeAt(i + 1);
        if (d >= 0xdc00 && d < 0xe000) {
          i++;
          c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
          out.push(0xf0 | c >> 18, 0x80 | (c >> 12 & 63), 0x80 | (c >> 6 & 63), 0x80 | (c & 63));
          continue;
        }
      }
      if (c < 0x80) out.push(c);
      else if (c < 0x800) out.push(0xc0 | c >> 6, 0x80 | (c & 63));
      else out.push(0xe0 | c >> 12, 0x80 | (c >> 6 & 63), 0x80 | (c & 63));
    }
    return out;
  }

  function fromUtf8(bytes) {
    var s = '';
    for (var i = 0; i < bytes.length; i++) s += '%' + (bytes[i] < 16 ? '0' : '') + bytes[i].toString(16);
    return decodeURIComponent(s);
  }

  var B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  function b64url(bytes) {
    var out = '';
    for (var i = 0; i < bytes.length; i += 3) {
      var n = (bytes[i] << 16) | ((bytes[i + 1] || 0) << 8) | (bytes[i + 2] || 0);
      out += B64[n >> 18 & 63] + B64[n >> 12 & 63];
      if (i + 1 < bytes.length) out += B64[n >> 6 & 63];
      if (i + 2 < bytes.length) out += B64[n & 63];
    }
    return out;
  }
  // Strict: one text per byte string. A length of 4n+1, or left-over bits that are not zero
  // (the last character of a signature changed without changing the bytes), is refused.
  function fromB64url(str) {
    var bytes = [], bits = 0, acc = 0;
    if (str.length % 4 === 1) throw new Error('the token is not base64url');
    for (var i = 0; i < str.length; i++) {
      var v = B64.indexOf(str[i]);
      if (v < 0) throw new Error('the token is not base64url');
      acc = ((acc << 6) | v) & 0xffff; bits += 6;
      if (bits >= 8) { bits -= 8; bytes.push(acc >> bits & 255); }
    }
    if (acc & ((1 << bits) - 1)) throw new Error('the token is not base64url');
    return bytes;
  }

  function encodeToken(event, options) {
    var o = options && typeof options === 'object' ? options : {};
    if (typeof o.secret !== 'string' || !o.secret) throw new Error('encodeToken: a secret is required');
    var ttl = o.expiresInSeconds === undefined ? 900 : Number(o.expiresInSeconds);
    var now = Math.floor(Date.now() / 1000);
    var claims = { iss: event.tenant.id, sub: event.user.user_id, iat: now, exp: now + ttl };
    var payload = o.payload && typeof o.payload === 'object' ? o.payload : {};
    for (var k in payload) if (hasOwn.call(payload, k)) claims[k] = payload[k];
    var head = b64url(utf8(stringify({ alg: 'HS256', typ: 'JWT' }))) + '.' +
      b64url(utf8(stringify(claims)));
    return head + '.' + b64url(hmac256(utf8(o.secret), utf8(head)));
  }

  var SKEW_S = 60;  // clocks of the token's issuer and the worker may differ this much
  function validateToken(event, options) {
    var o = options && typeof options === 'object' ? options : {};
    if (typeof o.secret !== 'string' || !o.secret) throw new Error('validateToken: a secret is required');
    var param = typeof o.tokenParameterName === 'string' ? o.tokenParameterName : 'session_token';
    var req = event.request || {};
    var token = (req.query && req.query[param]) || (req.body && req.body[param]);
    if (typeof token !== 'string') throw new Error('validateToken: no ' + param + ' in the request');
    var parts = token.split('.');
    if (parts.length !== 3) throw new Error('validateToken: the token is not a JWT');
    var header = parse(fromUtf8(fromB64url(parts[0])));
    if (!header || header.alg !== 'HS256') throw new Error('validateToken: the token is not HS256');
    var want = hmac256(utf8(o.secret), utf8(parts[0] + '.' + parts[1]));
    var got = fromB64url(parts[2]);
    var diff = want.length ^ got.length;
    for (var i = 0; i < want.length; i++) diff |= want[i] ^ (got[i] || 0);
    if (diff !== 0) throw new Error('validateToken: the token\'s signature is invalid');
    var claims = parse(fromUtf8(fromB64url(parts[1])));
    if (!claims || typeof claims !== 'object') throw new Error('validateToken: the token has no claims');
    var now = Math.floor(Date.now() / 1000);
    if (typeof claims.exp !== 'number' || claims.exp <= now) {
      throw new Error('validateToken: the token has expired');
    }
    if (claims.nbf !== undefined && (typeof claims.nbf !== 'number' || claims.nbf > now + SKEW_S)) {
      throw new Error('validateToken: the token is not valid yet (nbf)');
    }
    if (claims.iat !== undefined && (typeof claims.iat !== 'number' || claims.iat > now + SKEW_S)) {
      throw new Error('validateToken: the token was issued in the future (iat)');
    }
    // Bound to this sign-in, as Auth0 binds it: issued for this user, and for the state the
    // continue request came back with (the login service's transaction; Auth0's /continue).
    var user = event.user || {};
    if (typeof claims.sub !== 'string' || claims.sub !== String(user.user_id)) {
      throw new Error('validateToken: the token\'s sub is not this sign-in\'s user');
    }
    var state = (req.query && req.query.state) || (req.body && req.body.state);
    if (typeof state !== 'string' || !state) {
      throw new Error('validateToken: the continue request carries no state (request.query.state)');
    }
    if (claims.state !== state) {
      throw new Error('validateToken: the token\'s state is not this sign-in\'s state');
    }
    return claims;
  }

  function auth0Handler(input) {
    var names = limits.auth0[input.trigger] || [];
    var h = loaded.handlers;
    var ctx = input.context || {};
    var protocol = ctx.transaction && ctx.transaction.protocol;
    // The login service's request after a redirect came back (`context.continue`): an
    // action with onContinuePostLogin resumes there, the others run as before.
    if (ctx['continue'] && h.onContinuePostLogin && names.indexOf('onExecutePostLogin') >= 0) {
      return 'onContinuePostLogin';
    }
    if (names.indexOf('onExecuteCredentialsExchange') >= 0 && h.onExecuteCredentialsExchange &&
        (protocol === 'oauth2-client-credentials' || !h.onExecutePostLogin)) {
      return 'onExecuteCredentialsExchange';
    }
    for (var i = 0; i < names.length; i++) if (h[names[i]]) return names[i];
    return null;
  }

  function copyOf(value) {
    var out = {};
    if (value && typeof value === 'object') {
      for (var k in value) if (hasOwn.call(value, k)) out[k] = value[k];
    }
    return out;
  }

  function auth0Event(input) {
    var ctx = input.context || {};
    var ev = copyOf(ctx);
    var user = copyOf(input.user);
    user.user_id = user.id;
    if (!user.app_metadata || typeof user.app_metadata !== 'object') user.app_metadata = {};
    if (!user.user_metadata || typeof user.user_metadata !== 'object') user.user_metadata = {};
    ev.user = user;
    ev.request = input.request || {};
    var client = copyOf(ctx.client);
    if (client.client_id === undefined) client.client_id = ev.request.application_id;
    ev.client = client;
    var tenant = copyOf(ctx.tenant);
    tenant.id = input.tenant;
    ev.tenant = tenant;
    ev.secrets = copyOf(input.secrets);
    return ev;
  }

  // An api namespace that names what it lacks: Auth0 members gatehook does not have throw
  // "api.<path> is not supported", never "undefined is not a function".
  function strict(obj, path) {
    return new ProxyOf(obj, {
      get: function (target, prop) {
        if (typeof prop !== 'string' || hasOwn.call(target, prop) || prop === 'then' ||
            prop === 'toJSON') {
          return target[prop];
        }
        throw new Error(path + '.' + prop + ' is not supported by gatehook');
      }
    });
  }

  function queryString(url, query) {
    var parts = [];
    if (query && typeof query === 'object') {
      for (var k in query) {
        if (hasOwn.call(query, k) && query[k] !== undefined && query[k] !== null) {
          parts.push(encodeURIComponent(k) + '=' + encodeURIComponent(String(query[k])));
        }
      }
    }
    if (!parts.length) return url;
    var hash = url.indexOf('#');
    var base = hash >= 0 ? url.slice(0, hash) : url;
    var frag = hash >= 0 ? url.slice(hash) : '';
    return base + (base.indexOf('?') >= 0 ? '&' : '?') + parts.join('&') + frag;
  }

  // api.cache: the entries as the run began (input.cache), changed in place by set and
  // delete, whose writes leave with the output (the worker stores them). Auth0's bounds.
  var CACHE_ENTRIES = 20, CACHE_VALUE_BYTES = 4096, CACHE_KEY_CHARS = 256;
  var CACHE_TTL_MS = 15 * 60 * 1000, CACHE_MAX_TTL_MS = 24 * 3600 * 1000;
  function cacheApi(entries, out) {
    var view = copyOf(entries);
    function live(key, now) {
      var r = hasOwn.call(view, key) ? view[key] : null;
      return r && r.expires_at > now ? r : null;
    }
    return strict({
      get: function (key) {
        var r = live(String(key), Date.now());
        return r ? { value: r.value, expires_at: r.expires_at } : undefined;
      },
      set: function (key, value, options) {
        var k = String(key), v = String(value), now = Date.now();
        if (!k.length || k.length > CACHE_KEY_CHARS) return { type: 'error', code: 'CacheKeySizeExceeded' };
        if (utf8(v).length > CACHE_VALUE_BYTES) return { type: 'error', code: 'CacheValueSizeExceeded' };
        var count = 0;
        for (var other in view) if (other !== k && live(other, now)) count++;
        if (count >= CACHE_ENTRIES) return { type: 'error', code: 'CacheSizeExceeded' };
        if (out.cache.length >= 100) return { type: 'error', code: 'MaxSideEffectsExceeded' };
        var o = options && typeof options === 'object' ? options : {};
        var at = Infinity;
        if (o.ttl !== undefined) at = now + Number(o.ttl);
        if (o.expires_at !== undefined) at = Math.min(at, Number(o.expires_at));
        if (at === Infinity) at = now + CACHE_TTL_MS;
        if (at !== at) return { type: 'error', code: 'InvalidExpiry' };
        if (at <= now) return { type: 'error', code: 'ItemAlreadyExpired' };
        at = Math.floor(Math.min(at, now + CACHE_MAX_TTL_MS));
        view[k] = { value: v, expires_at: at };
        out.cache.push({ op: 'set', key: k, value: v, expires_at: at });
        return { type: 'success', record: { value: v, expires_at: at } };
      },
      'delete': function (key) {
        var k = String(key);
        if (!k.length || k.length > CACHE_KEY_CHARS) return { type: 'error', code: 'CacheKeySizeExceeded' };
        delete view[k];
        out.cache.push({ op: 'delete', key: k });
        return { type: 'success' };
      }
    }, 'api.cache');
  }

  function auth0Api(handler, out, event, entries) {
    var api = { cache: cacheApi(entries, out) };
    var self = null;
    function chain(fn) { return function () { fn.apply(null, arguments); return self; }; }
    function deny(reason, message) {
      out.denied = true;
      out.reason = reason;
      out.message = message === undefined || message === null ? null : String(message);
    }
    function metadata(field) {
      return chain(function (key, value) {
        if (!out.user_updates[field]) out.user_updates[field] = {};
        out.user_updates[field][String(key)] = value === undefined ? null : value;
      });
    }
    function scope(add) {
      return chain(function (name) {
        var s = String(name);
        var here = add ? out.access_token_scopes.add : out.access_token_scopes.remove;
        var there = add ? out.access_token_scopes.remove : out.access_token_scopes.add;
        var i = there.indexOf(s);
        if (i >= 0) there.splice(i, 1);
        if (here.indexOf(s) < 0) here.push(s);
      });
    }
    function factors(list) {
      return (Array.isArray(list) ? list : []).map(function (f) {
        var type = f && typeof f === 'object' ? String(f.type) : String(f);
        var item = { type: type };
        if (f && typeof f === 'object' && f.options && typeof f.options === 'object') {
          item.options = f.options;
        }
        return item;
      });
    }
    function mfa(mode, any) {
      return chain(function (first, options) {
        var list = any ? factors(first) : factors([first]);
        if (!any && options && Array.isArray(options.additionalFactors)) {
          list = list.concat(factors(options.additionalFactors));
        }
        out.mfa = { mode: mode, factors: list, any: !!any };
      });
    }
    var accessToken = {
      setCustomClaim: chain(function (key, value) { out.access_token_claims[String(key)] = value; }),
      addScope: scope(true),
      removeScope: scope(false)
    };
    var user = {
      setAppMetadata: metadata('app_metadata'),
      setUserMetadata: metadata('user_metadata')
    };
    if (handler === 'onExecutePostLogin' || handler === 'onContinuePostLogin') {
      api.access = strict({ deny: chain(function (reason) { deny('access_denied', reason); }) },
        'api.access');
      api.idToken = strict({
        setCustomClaim: chain(function (key, value) { out.claims[String(key)] = value; })
      }, 'api.idToken');
      api.accessToken = strict(accessToken, 'api.accessToken');
      api.user = strict(user, 'api.user');
      api.multifactor = strict({
        enable: chain(function (provider, options) {
          var o = options && typeof options === 'object' ? options : {};
          out.mfa = {
            mode: 'enable', provider: String(provider),
            allow_remember_browser: !!o.allowRememberBrowser,
            provider_options: o.providerOptions && typeof o.providerOptions === 'object'
              ? o.providerOptions : {}
          };
        })
      }, 'api.multifactor');
      api.authentication = strict({
        challengeWith: mfa('challenge', false), challengeWithAny: mfa('challenge', true),
        enrollWith: mfa('enroll', false), enrollWithAny: mfa('enroll', true)
      }, 'api.authentication');
      api.redirect = strict({
        sendUserTo: chain(function (url, options) {
          out.redirect_url = queryString(String(url), options && options.query);
        }),
        canRedirect: function () { return true; },
        encodeToken: function (options) { return encodeToken(event, options); },
        validateToken: function (options) { return validateToken(event, options); }
      }, 'api.redirect');
      api.samlResponse = strict({
        setAttribute: chain(function (name, value) {
          var key = String(name);
          if (value === null || value === undefined) delete out.saml_attributes[key];
          else out.saml_attributes[key] = Array.isArray(value) ? value.map(String) : [String(value)];
        })
      }, 'api.samlResponse');
    } else if (handler === 'onExecutePreUserRegistration') {
      api.access = strict({
        deny: chain(function (reason, userMessage) {
          deny('access_denied', userMessage === undefined ? reason : userMessage);
        })
      }, 'api.access');
      api.validation = strict({
        error: chain(function (code, message) { deny(String(code), message); })
      }, 'api.validation');
      api.user = strict(user, 'api.user');
    } else if (handler === 'onExecuteCredentialsExchange') {
      api.access = strict({
        deny: chain(function (code, reason) { deny(String(code), reason); })
      }, 'api.access');
      api.accessToken = strict(accessToken, 'api.accessToken');
    }
    self = strict(api, 'api');
    return self;
  }

  function auth0Run(input) {
    var handler = auth0Handler(input);
    if (handler === null) {
      throw new Error('this Auth0 Action exports no handler for the ' + String(input.trigger) +
        ' trigger (it exports ' + Object.keys(loaded.handlers).join(', ') + ')');
    }
    var out = {
      denied: false, reason: null, message: null, redirect_url: null, mfa: null,
      claims: {}, user_updates: {}, saml_attributes: {}, access_token_claims: {},
      access_token_scopes: { add: [], remove: [] }, cache: []
    };
    var event = auth0Event(input);
    var ret = loaded.handlers[handler](event, auth0Api(handler, out, event, input.cache));
    function collect() {
      var kind = out.denied ? 'block' : (out.mfa ? 'demand_mfa'
        : (out.redirect_url !== null ? 'redirect' : 'continue'));
      var result = {
        kind: kind, reason: out.reason, message: out.message, claims: out.claims,
        user_updates: out.user_updates, saml_attributes: out.saml_attributes,
        access_token_claims: out.access_token_claims,
        access_token_scopes: out.access_token_scopes, mfa: out.mfa, cache: out.cache
      };
      if (kind === 'redirect') result.redirect_url = out.redirect_url;
      return result;
    }
    return { ret: ret, collect: collect };
  }

  // ---- loading and running -----------------------------------------------------------
  var loaded = null;

  function define(factory, style, actionName) {
    var module = { exports: {} };
    var zitadelFn = factory(module.exports, require, module);
    var exp = module.exports;
    var execute = exp && (typeof exp.execute === 'function' ? exp.execute
      : (typeof exp.default === 'function' ? exp.default : null));
    var handlers = {};
    var auth0 = false;
    if (exp && (typeof exp === 'object' || typeof exp === 'function')) {
      AUTH0_EXPORTS.forEach(function (n) {
        if (typeof exp[n] === 'function') { handlers[n] = exp[n]; auth0 = true; }
      });
    }
    var found = execute ? 'module' : (auth0 ? 'auth0'
      : (typeof zitadelFn === 'function' ? 'zitadel' : null));
    if (style !== 'auto' && found !== style) {
      found = (style === 'zitadel' && typeof zitadelFn === 'function') ? 'zitadel'
        : (style === 'module' && execute ? 'module' : (style === 'auth0' && auth0 ? 'auth0' : null));
    }
    loaded = {
      style: found, execute: execute, zitadel: zitadelFn, name: actionName, handlers: handlers
    };
    return found;
  }

  function exportsOf() { return stringify(Object.keys(loaded.handlers)); }

  function oom(message) {
    return message.indexOf('out of memory') >= 0 || message.indexOf('string too long') >= 0;
  }

  function settle(box, value) {
    box.settled = true;
    var s;
    try {
      s = stringify(value === undefined ? {} : value);
    } catch (e) {
      var why = describe(e);
      box.error = oom(why) ? { type: 'memory', message: 'memory limit exceeded' }
        : { type: 'invalid_result', message: 'result is not JSON-serialisable: ' + why };
      return;
    }
    if (typeof s !== 'string') {
      box.error = { type: 'invalid_result', message: 'result is not a JSON object' };
    } else if (s.length > limits.output_bytes) {
      box.error = { type: 'invalid_result', message: 'result is larger than ' + limits.output_bytes + ' bytes' };
    } else {
      box.out = s;
    }
  }

  function thenable(v) {
    return v !== null && (typeof v === 'object' || typeof v === 'function') &&
      typeof v.then === 'function';
  }

  // One execution on the input's JSON text: the box gets `out` (the result as JSON text) or
  // `error`, and `settled`, once the action's value settles (at once when it is no promise;
  // else while the host runs the promise jobs).
  function start(text) {
    state.logs = []; state.bytes = 0; state.truncated = false;
    var box = { logs: state.logs, settled: false, out: null, error: null };
    function fail(e) {
      box.settled = true;
      var why = describe(e);
      box.error = oom(why) ? { type: 'memory', message: 'memory limit exceeded' }
        : { type: 'threw', message: why };
    }
    try {
      var input = parse(text);
      var ret, after;
      if (loaded.style === 'module') {
        ret = loaded.execute(input);
        after = function (v) { settle(box, v); };
      } else if (loaded.style === 'auth0') {
        var run = auth0Run(input);
        ret = run.ret;
        after = function () { settle(box, run.collect()); };
      } else {
        var made = buildApi(loaded.name);
        ret = loaded.zitadel(buildCtx(input), made.api);
        after = function () { settle(box, made.collect()); };
      }
      if (thenable(ret)) pThen.call(pResolve(ret), after, fail);
      else after(ret);
    } catch (e) {
      fail(e);
    }
    return box;
  }

  // The box for the host, as flat strings (the binding cannot convert rope strings, which
  // concatenation makes): [logs, error, settled] as JSON, and the output's JSON text.
  function meta(box) { return stringify([box.logs, box.error, box.settled]); }
  function output(box) { return box.out; }
  function settled(box) { return box.settled; }
  // The common case in one crossing: the output when the call settled well and logged
  // nothing, else null (then the host asks for meta and output).
  function result(box) {
    return box.out !== null && box.logs.length === 0 && box.error === null ? box.out : null;
  }

  Object.defineProperty(G, '__gh', {
    value: Object.freeze({
      define: define, start: start, meta: meta, output: output, result: result,
      settled: settled, exports: exportsOf
    }),
    writable: false, configurable: false, enumerable: false
  });
  return function setup(text) {
    var given = parse(text);
    limits.log_bytes = given.log_bytes;
    limits.output_bytes = given.output_bytes;
    limits.auth0 = given.auth0 || {};
  };
})(globalThis);
