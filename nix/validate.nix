# The agent's configuration rules in plain Nix (builtins only, no nixpkgs),
# so the NixOS module refuses at evaluation what nix-ota-agent would refuse
# at run time. Each check is at least as strict as the agent's own
# (agent.Config.Check and what it calls): a value accepted here is accepted
# by the agent. agent/module_test.go evaluates these with real Nix against
# the agent on the same values. What only the agent can decide (an ECDSA
# point on the curve, a weak ed25519 key) is left to the build-time
# `nix-ota-agent check-config` of the generated file.
let
  inherit (builtins)
    all any elem elemAt filter foldl' genList head isList isString length
    listToAttrs match split stringLength substring;

  matches = re: s: isString s && match re s != null;
  chars = s: genList (i: substring i 1 s) (stringLength s);
  # The pieces of s between matches of the regular expression sep.
  splitOn = sep: s: filter isString (split sep s);
  unique = l: length l == length (foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ] l);
  digits = listToAttrs (genList (i: { name = toString i; value = i; }) 10);
  toInt = s: foldl' (n: c: n * 10 + digits.${c}) 0 (chars s);

  # manifest.ValidateName: channels, device ids and classes, key names.
  namePattern = "[A-Za-z0-9][A-Za-z0-9._-]{0,63}";

  # Durations both Go (time.ParseDuration) and systemd read the same way.
  durationPattern = "([0-9]{1,9}(ms|s|m|h)){1,4}";
  unitMs = { ms = 1; s = 1000; m = 60000; h = 3600000; };
  durationMs = s:
    foldl' (n: g: n + toInt (elemAt g 0) * unitMs.${elemAt g 1}) 0
      (filter isList (split "([0-9]+)(ms|s|m|h)" s));

  # Public keys: manifest.ParsePublicKey (NAME:[ed25519:]BASE64 of 32
  # bytes, or NAME:ecdsa-p256:BASE64 of a P-256 SubjectPublicKeyInfo).
  ed25519Pattern = "${namePattern}:(ed25519:)?[A-Za-z0-9+/]{43}=";
  ecdsaPattern = "${namePattern}:ecdsa-p256:MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE[A-Za-z0-9+/]{86}==";
  keyName = s: head (splitOn ":" s);

  # URL pieces, narrower than RFC 3986 so Go and Nix cannot read one string
  # two ways: no percent-encoding, no credentials, no fragment.
  hostPattern = "([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|[[][0-9A-Fa-f:.]+[]])(:[0-9]{1,5})?";
  segment = "[A-Za-z0-9._~!$&'()*+,;=:@-]";
  httpPattern = "https?://${hostPattern}(/${segment}*)*";
  filePattern = "file://(localhost)?(/${segment}*)+";
  # bucket.ParseS3URL: s3://BUCKET[/PREFIX][?PARAMS].
  s3Pattern = "s3://([A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9])(/[^?#]*)?(\\?(.*))?";
  s3Params = [ "endpoint" "region" "scheme" "profile" "secret-key" "compression"
    "parallel-compression" "multipart-upload" "buffer-size" "write-nar-listing"
    "narinfo-compression" "ls-compression" "log-compression" "index-debug-info"
    "want-mass-query" "priority" ];
  isS3BucketName = b:
    match ".*(\\.\\.|\\.-|-\\.).*" b == null
    && match "[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+" b == null;
  # bucket.ValidateKey on the prefix: no empty, "." or ".." segment.
  isPrefix = p:
    let segs = splitOn "/" p; inner = filter (x: x != "") segs; in
    p == "" || p == "/" || (
      stringLength p <= 1024 &&
      all (x: match "${segment}+" x != null && x != "." && x != ".." && match "\\.nix-ota-.*" x == null) inner
      && match "/?[^/]+(/[^/]+)*/?" p != null);
  # name=value pairs: allowed names, each once, values from a small set.
  isQuery = allowed: valuePattern: q:
    let
      kvs = splitOn "&" q;
      pairs = map (kv: match "([^=]*)=(.*)" kv) kvs;
    in
    all (p: p != null && elem (elemAt p 0) allowed && match valuePattern (elemAt p 1) != null) pairs
    && unique (map (p: elemAt p 0) pairs);
  isS3 = s:
    let m = match s3Pattern s; in
    m != null && isS3BucketName (elemAt m 0)
    && isPrefix (if elemAt m 1 == null then "" else elemAt m 1)
    && (elemAt m 3 == null || (
      isQuery s3Params "[A-Za-z0-9._:/-]+" (elemAt m 3)
      && all s3Param (map (kv: match "([^=]*)=(.*)" kv) (splitOn "&" (elemAt m 3)))));
  # scheme is http or https; endpoint is HOST[:PORT], optionally with http:// or https://.
  s3Param = p:
    let k = elemAt p 0; x = elemAt p 1; in
    if k == "scheme" then elem x [ "http" "https" ]
    else if k == "endpoint" then match "(https?://)?${hostPattern}/?" x != null
    else true;

  # manifest.ValidateSubstituter, step by step.
  printable = chars "!\"\$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_`abcdefghijklmnopqrstuvwxyz{|}~";
  substituterParams = {
    https = [ "priority" "want-mass-query" ];
    http = [ "priority" "want-mass-query" ];
    file = [ "priority" "want-mass-query" ];
    s3 = [ "region" "endpoint" "scheme" "profile" "priority" "want-mass-query" ];
  };
  # name[:port] or [IPv6][:port], as the agent's validHost.
  substituterHost = "([A-Za-z0-9._-]+|[[][0-9A-Fa-f:.]+[]])(:[0-9]{1,5})?";
  isSubstituter = s:
    let
      m = match "(https|http|file|s3)://(.*)" s;
      scheme = elemAt m 0;
      aq = match "([^?]*)(\\?(.*))?" (elemAt m 1);
      authPath = elemAt aq 0;
      query = elemAt aq 2;
      hp = match "([^/]*)(/(.*))?" authPath;
      host = elemAt hp 0;
      path = if elemAt hp 2 == null then "" else elemAt hp 2;
    in
    isString s && stringLength s >= 1 && stringLength s <= 1024
    && all (c: elem c printable) (chars s) && m != null
    && match ".*[@%].*" authPath == null
    && (if scheme == "file" then host == "" && path != "" else match substituterHost host != null)
    && (query == null || query == "" || isQuery substituterParams.${scheme} "[A-Za-z0-9._:-]+" query);

  # agent.ParseWindow: HH:MM-HH:MM, not empty.
  clock = "([01]?[0-9]|2[0-3]):([0-5][0-9])";
  windowMinutes = s:
    let m = match "${clock}-${clock}" s; in
    if m == null then null else {
      start = toInt (elemAt m 0) * 60 + toInt (elemAt m 1);
      end = toInt (elemAt m 2) * 60 + toInt (elemAt m 3);
    };
in
{
  inherit durationMs keyName unique;

  isName = matches namePattern;
  isDuration = s: matches durationPattern s;
  # interval: at least 1s; healthTimeout: more than 0s.
  isInterval = s: matches durationPattern s && durationMs s >= 1000;
  isTimeout = s: matches durationPattern s && durationMs s > 0;
  isPublicKey = s: matches ed25519Pattern s || matches ecdsaPattern s;
  # Nix's binary cache keys: NAME:BASE64 of a 32-byte ed25519 key.
  isCacheKey = matches "[^:[:space:]]+:[A-Za-z0-9+/]{43}=";
  # Where channels/ is read: https/http (no query), s3 or file.
  isBucket = s: matches httpPattern s || matches filePattern s || (isString s && isS3 s);
  # Where status is written: s3 or file only.
  isWritableBucket = s: matches filePattern s || (isString s && isS3 s);
  isSubstituter = s: isString s && isSubstituter s;
  isRebootWindow = s: isString s && (let w = windowMinutes s; in w != null && w.start != w.end);
  # agent.ParseSize, upper-case suffixes only.
  isSize = matches "[0-9]{1,15}(\\.[0-9]{1,6})?[KMGT]?";
  isAbsolutePath = matches "/[^[:cntrl:]]*";
}
