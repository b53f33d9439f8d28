// Preloaded into third-party Node servers that bind every interface: forces 127.0.0.1.
const net = require('net');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number' || (typeof args[0] === 'string' && /^\d+$/.test(args[0]))) {
    const port = args.shift();
    if (typeof args[0] === 'string') args.shift();
    return listen.call(this, port, '127.0.0.1', ...args);
  }
  if (args[0] && typeof args[0] === 'object' && !Array.isArray(args[0]) && !('fd' in args[0])) {
    args[0] = { ...args[0], host: '127.0.0.1' };
  }
  return listen.apply(this, args);
};
