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

  function auth0Handler(input) {
    var names = limits.auth0[input.trigger] || [];
    var h = loaded.handlers;
    var ctx = input.context || {};
    var protocol = ctx.transaction && ctx.transaction.protocol;
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

  function auth0Api(handler, out) {
    var api = {};
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
        canRedirect: function () { return true; }
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
      access_token_scopes: { add: [], remove: [] }
    };
    var ret = loaded.handlers[handler](auth0Event(input), auth0Api(handler, out));
    function collect() {
      var kind = out.denied ? 'block' : (out.mfa ? 'demand_mfa'
        : (out.redirect_url !== null ? 'redirect' : 'continue'));
      var result = {
        kind: kind, reason: out.reason, message: out.message, claims: out.claims,
        user_updates: out.user_updates, saml_attributes: out.saml_attributes,
        access_token_claims: out.access_token_claims,
        access_token_scopes: out.access_token_scopes, mfa: out.mfa
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
  // The common case in one crossing: the output when the call settled well and logged
  // nothing, else null (then the host asks for meta and output).
  function result(box) {
    return box.out !== null && box.logs.length === 0 && box.error === null ? box.out : null;
  }

  Object.defineProperty(G, '__gh', {
    value: Object.freeze({
      define: define, start: start, meta: meta, output: output, result: result,
      exports: exportsOf
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
