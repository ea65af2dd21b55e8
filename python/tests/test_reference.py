"""Each op family of the original, through the Python API, against
TensorFlow's values in ../shared/reference (format and tolerance: its README):
forward value, then the gradient of every differentiable input for the case's
upstream gradient. Also the composite graphs and the optimizers' updates."""
import json

import numpy as np
import pytest

import adgraph as ad
from adgraph import optimizers

from conftest import SHARED

REF = SHARED / 'reference'
ATOL = RTOL = 1e-4

if not REF.is_dir():
  pytest.fail('reference vectors not found at %s (set ADGRAPH_SHARED_DIR)' % REF,
              pytrace=False)


def tensor(t):
  return np.array(t['data'], dtype=np.float32).reshape(t['shape'])


def cases(op):
  return json.load(open(REF / ('%s.json' % op)))['cases']


def check(got, want):
  got = np.asarray(got, dtype=np.float64)
  want = np.asarray(want, dtype=np.float64)
  assert got.shape == want.shape, (got.shape, want.shape)
  assert np.all(np.abs(got - want) <= ATOL + RTOL * np.abs(want)), (got, want)


def build(op, inputs, attrs):
  """The op on placeholders for `inputs`; returns (node, placeholders)."""
  ph = {k: ad.placeholder(v.shape) for k, v in inputs.items()}
  a = attrs
  if op in ('add', 'subtract', 'multiply', 'matmul', 'divide', 'maximum', 'minimum'):
    node = getattr(ad, op)(ph['x'], ph['y'])
  elif op in ('exp', 'sigmoid', 'tanh', 'relu', 'abs', 'sin', 'cos', 'rsqrt', 'softplus',
              'silu', 'erf', 'log1p', 'square', 'sqrt', 'log'):
    node = getattr(ad, op)(ph['x'])
  elif op == 'leaky_relu':
    node = ad.leaky_relu(ph['x'], a['alpha'])
  elif op == 'elu':
    node = ad.elu(ph['x'], a.get('alpha', 1.0))
  elif op == 'gelu':
    node = ad.gelu(ph['x'], a['approximate'])
  elif op == 'pow':
    node = ad.pow(ph['x'], a['exponent'])
  elif op == 'reshape':
    node = ad.reshape(ph['x'], a['shape'])
  elif op in ('reduce_sum', 'reduce_mean'):
    node = getattr(ad, op)(ph['x'], a['axis'])
  elif op == 'pad':
    node = ad.pad(ph['x'], a['paddings'], a['constant_value'])
  elif op == 'concat':
    node = ad.concat([ph['x%d' % i] for i in range(a['num_inputs'])], a['axis'])
  elif op == 'slice':
    node = ad.slice(ph['x'], a['begin'], a['sizes'])
  elif op == 'l2norm':
    node = ad.l2norm(ph['x'], a['scalar'])
  elif op in ('softmax_cross_entropy_loss', 'sigmoid_cross_entropy_loss'):
    node = getattr(ad, op)(ph['labels'], ph['logits'])
  elif op in ('conv2d', 'conv2d_transpose'):
    node = getattr(ad, op)(ph['x'], ph['kernel'], a['strides'], a['padding'])
  elif op in ('maxpool2d', 'avgpool2d'):
    node = getattr(ad, op)(ph['x'], a['kernel_size'], a['strides'], a['padding'])
  elif op == 'dropout':
    node = ad.dropout(ph['x'], float(a['rate']), a['is_training'])
  # adgraph's additions
  elif op == 'gather':
    node = ad.gather(ph['params'], ph['indices'], a['axis'])
  elif op == 'one_hot':
    node = ad.one_hot(ph['indices'], a['depth'], a['on_value'], a['off_value'])
  elif op == 'batch_matmul':
    node = ad.matmul(ph['x'], ph['y'], transpose_a=a['adj_x'], transpose_b=a['adj_y'])
  elif op in ('reduce_max', 'reduce_min'):
    node = getattr(ad, op)(ph['x'], a['axis'], keep_dims=a['keepdims'])
  elif op == 'argmax':
    node = ad.argmax(ph['x'], a['axis'])
  elif op == 'where':
    node = ad.where(ph['condition'], ph['x'], ph['y'])
  elif op in ('greater', 'less', 'equal'):
    node = getattr(ad, op)(ph['x'], ph['y'])
  elif op == 'clip_by_value':
    node = ad.clip_by_value(ph['x'], a['clip_value_min'], a['clip_value_max'])
  elif op in ('softmax', 'log_softmax'):
    node = getattr(ad, op)(ph['x'], a['axis'])
  elif op == 'sparse_softmax_cross_entropy_loss':
    node = ad.sparse_softmax_cross_entropy_loss(ph['labels'], ph['logits'])
  elif op == 'stack':
    node = ad.stack([ph['x%d' % i] for i in range(a['num_inputs'])], a['axis'])
  elif op == 'tile':
    node = ad.tile(ph['x'], a['multiples'])
  elif op == 'expand_dims':
    node = ad.expand_dims(ph['x'], a['axis'])
  elif op == 'squeeze':
    node = ad.squeeze(ph['x'], a['axis'])
  elif op == 'broadcast_to':
    node = ad.broadcast_to(ph['x'], a['shape'])
  elif op == 'transpose':
    node = ad.transpose(ph['x'], a['perm'])
  elif op == 'layer_norm':
    node = ad.layer_norm(ph['x'], ph['gamma'], ph['beta'], a['begin_norm_axis'], a['epsilon'])
  elif op == 'cumsum':
    node = ad.cumsum(ph['x'], a['axis'], a['exclusive'], a['reverse'])
  else:
    raise AssertionError(op)
  return node, ph


SINGLE_OPS = ['add', 'subtract', 'multiply', 'exp', 'sigmoid', 'tanh', 'relu', 'leaky_relu',
              'matmul', 'reshape', 'reduce_sum', 'reduce_mean', 'pad', 'concat', 'slice',
              'l2norm', 'softmax_cross_entropy_loss', 'sigmoid_cross_entropy_loss', 'conv2d',
              'conv2d_transpose', 'maxpool2d', 'avgpool2d', 'dropout',
              # adgraph's additions with vectors of their own
              'divide', 'maximum', 'minimum', 'abs', 'sin', 'cos', 'rsqrt', 'softplus', 'elu',
              'silu', 'erf', 'log1p', 'square', 'sqrt', 'log', 'gelu', 'pow', 'gather', 'one_hot',
              'batch_matmul', 'reduce_max', 'reduce_min', 'argmax', 'where', 'greater', 'less',
              'equal', 'clip_by_value', 'softmax', 'log_softmax',
              'sparse_softmax_cross_entropy_loss', 'stack', 'tile', 'expand_dims', 'squeeze',
              'broadcast_to', 'transpose', 'layer_norm', 'cumsum']


def _params():
  for op in SINGLE_OPS:
    for c in cases(op):
      yield pytest.param(op, c, id='%s-%s' % (op, c['name']))


@pytest.mark.parametrize('op,case', list(_params()))
def test_single_op(graph, op, case):
  inputs = {k: tensor(v) for k, v in case['inputs'].items()}
  node, ph = build(op, inputs, case['attrs'])
  feed = {ph[k]: v for k, v in inputs.items()}
  runtime = graph.get_runtime()
  with runtime.forward_backward_cycle():
    check(node.forward(feed), tensor(case['output']))
    if case.get('grads'):
      node.backward(feed, bwval=tensor(case['upstream']))
      for name, want in case['grads'].items():
        check(runtime.get_bwval(ph[name].name), tensor(want))


@pytest.mark.parametrize('case', cases('fused_batch_norm'), ids=lambda c: c['name'])
def test_fused_batch_norm(graph, case):
  inputs = {k: tensor(v) for k, v in case['inputs'].items()}
  a = case['attrs']
  x = ad.placeholder(inputs['x'].shape)
  scale = ad.placeholder(inputs['scale'].shape)
  offset = ad.placeholder(inputs['offset'].shape)
  zeros = ad.initializers.ZerosInitializer()
  mean = ad.variable(inputs['moving_mean'].shape, zeros, trainable=False)
  var = ad.variable(inputs['moving_variance'].shape, zeros, trainable=False)
  mean.set_val(inputs['moving_mean'])
  var.set_val(inputs['moving_variance'])
  y = ad.fused_batch_norm(x, scale, offset, mean, var, epsilon=a['epsilon'],
                          decay=a['decay'], is_training=a['is_training'])
  feed = {x: inputs['x'], scale: inputs['scale'], offset: inputs['offset']}
  runtime = graph.get_runtime()
  with runtime.forward_backward_cycle():
    check(y.forward(feed), tensor(case['output']))
    if a['is_training']:
      y.backward(feed, bwval=tensor(case['upstream']))
      for name, node in (('x', x), ('scale', scale), ('offset', offset)):
        check(runtime.get_bwval(node.name), tensor(case['grads'][name]))
  if a['is_training']:
    check(mean.val, tensor(case['extra']['moving_mean_updated']))
    check(var.val, tensor(case['extra']['moving_variance_updated']))
  else:
    check(mean.val, inputs['moving_mean'])


@pytest.mark.parametrize('case', cases('graphs'), ids=lambda c: c['name'])
def test_graph(graph, case):
  inputs = {k: tensor(v) for k, v in case['inputs'].items()}
  attrs = case['attrs']
  values = {}
  feed = {}
  zeros = ad.initializers.ZerosInitializer()
  for k, v in inputs.items():
    if k.startswith('moving_'):
      values[k] = ad.variable(v.shape, zeros, trainable=False).initialize(v)
    else:
      values[k] = ad.placeholder(v.shape)
      feed[values[k]] = v
  for step in attrs['steps']:
    args = [values[n] for n in step['args']]
    op, a = step['op'], step['attrs']
    if op == 'fused_batch_norm':
      values[step['out']] = ad.fused_batch_norm(*args, **a)
    elif op in ('reduce_mean', 'reduce_sum'):
      values[step['out']] = getattr(ad, op)(args[0], a.get('axis'))
    elif op == 'l2norm':
      values[step['out']] = ad.l2norm(args[0], a['scalar'])
    elif op == 'conv2d':
      values[step['out']] = ad.conv2d(args[0], args[1], a['strides'], a['padding'])
    elif op == 'avgpool2d':
      values[step['out']] = ad.avgpool2d(args[0], a['kernel_size'], a['strides'], a['padding'])
    else:
      values[step['out']] = getattr(ad, op)(*args)
  loss = values[attrs['loss']]
  runtime = graph.get_runtime()
  with runtime.forward_backward_cycle():
    check(loss.forward(feed), tensor(case['output']))
    loss.backward(feed)
    for name in attrs['differentiable']:
      check(runtime.get_bwval(values[name].name), tensor(case['grads'][name]))


OPTIMIZERS = {
    'gradient_descent': lambda a: optimizers.GradientDescentOptimizer(alpha=a['alpha']),
    'adam': lambda a: optimizers.AdamOptimizer(alpha=a['alpha'], beta1=a['beta1'],
                                               beta2=a['beta2'], epsilon=a['epsilon']),
    'rmsprop': lambda a: optimizers.RMSPropOptimizer(alpha=a['alpha'], rho=a['rho'],
                                                     momentum=a['momentum'],
                                                     epsilon=a['epsilon']),
}


@pytest.mark.parametrize('case', cases('optimizers'), ids=lambda c: c['name'])
def test_optimizer(graph, case):
  inputs = {k: tensor(v) for k, v in case['inputs'].items()}
  a = case['attrs']
  zeros = ad.initializers.ZerosInitializer()
  v = {n: ad.variable(inputs[n].shape, zeros).initialize(inputs[n]) for n in ('var0', 'var1')}
  opt = OPTIMIZERS[a['optimizer']](a)
  for step in range(1, a['steps'] + 1):
    opt.apply_gradients([(inputs['grad_%s_step%d' % (n, step)], v[n]) for n in ('var0', 'var1')])
    for n in ('var0', 'var1'):
      check(v[n].val, tensor(case['outputs']['%s_step%d' % (n, step)]))
